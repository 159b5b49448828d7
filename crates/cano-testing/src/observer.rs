//! [`RecordingObserver`]: every event of every run, kept in order, with assertions on
//! the path a run took.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cano_core::{CanoError, RunId, RunObserver};

/// One observer callback, with states and errors as text (`Debug` and `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the callback's arguments, named alike
pub enum Event {
    RunStart {
        run: RunId,
        state: String,
    },
    RunEnd {
        run: RunId,
        outcome: Result<String, String>,
    },
    StateEnter {
        run: RunId,
        state: String,
    },
    TaskStart {
        run: RunId,
        state: String,
        task: String,
        attempt: usize,
    },
    TaskSuccess {
        run: RunId,
        state: String,
        task: String,
    },
    TaskFailure {
        run: RunId,
        state: String,
        task: String,
        error: String,
    },
    Retry {
        run: RunId,
        state: String,
        task: String,
        attempt: usize,
        error: String,
        delay: Duration,
    },
    CircuitOpen {
        run: RunId,
        state: String,
        task: String,
        breaker: String,
    },
    CircuitHalfOpen {
        run: RunId,
        state: String,
        task: String,
        breaker: String,
    },
    CircuitClose {
        run: RunId,
        state: String,
        task: String,
        breaker: String,
    },
    CircuitRejected {
        run: RunId,
        state: String,
        task: String,
        breaker: String,
    },
    Throttled {
        run: RunId,
        state: String,
        task: String,
        limiter: String,
        waited: Duration,
        admitted: bool,
    },
    Checkpoint {
        run: RunId,
        state: String,
        seq: u64,
    },
    Resume {
        run: RunId,
        state: String,
        seq: u64,
    },
    CompensationStart {
        run: RunId,
        state: String,
        task: String,
    },
    CompensationSuccess {
        run: RunId,
        state: String,
        task: String,
    },
    CompensationFailure {
        run: RunId,
        state: String,
        task: String,
        error: String,
    },
}

impl Event {
    /// The run the event belongs to.
    pub fn run(&self) -> RunId {
        match self {
            Self::RunStart { run, .. }
            | Self::RunEnd { run, .. }
            | Self::StateEnter { run, .. }
            | Self::TaskStart { run, .. }
            | Self::TaskSuccess { run, .. }
            | Self::TaskFailure { run, .. }
            | Self::Retry { run, .. }
            | Self::CircuitOpen { run, .. }
            | Self::CircuitHalfOpen { run, .. }
            | Self::CircuitClose { run, .. }
            | Self::CircuitRejected { run, .. }
            | Self::Throttled { run, .. }
            | Self::Checkpoint { run, .. }
            | Self::Resume { run, .. }
            | Self::CompensationStart { run, .. }
            | Self::CompensationSuccess { run, .. }
            | Self::CompensationFailure { run, .. } => *run,
        }
    }
}

/// Records every event it is told about. Attach it with
/// `Workflow::with_observer(recorder.clone())` and ask it afterwards.
///
/// ```
/// use cano_core::{CanoError, Task, TaskResult, Workflow};
/// use cano_testing::RecordingObserver;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum S { A, B, Done }
/// struct Go(S);
/// #[async_trait::async_trait]
/// impl Task<S> for Go {
///     async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
///         Ok(TaskResult::Single(self.0.clone()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let recorder = RecordingObserver::new();
/// let workflow = Workflow::bare()
///     .register(S::A, Go(S::B))
///     .register(S::B, Go(S::Done))
///     .add_exit_state(S::Done)
///     .with_observer(recorder.clone());
/// workflow.orchestrate(S::A).await.unwrap();
/// let run = recorder.runs()[0];
/// recorder.assert_path(run, &["A", "B"]);
/// assert_eq!(recorder.outcome(run), Some(Ok("Done".to_owned())));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct RecordingObserver {
    events: Mutex<Vec<Event>>,
}

impl RecordingObserver {
    /// A recorder with no events, shared (as `with_observer` takes it).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, event: Event) {
        self.lock().push(event);
    }

    /// Every event so far, in the order they happened.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// The events of one run.
    pub fn events_of(&self, run: RunId) -> Vec<Event> {
        self.lock()
            .iter()
            .filter(|e| e.run() == run)
            .cloned()
            .collect()
    }

    /// The runs seen, in the order they started.
    pub fn runs(&self) -> Vec<RunId> {
        self.lock()
            .iter()
            .filter_map(|e| match e {
                Event::RunStart { run, .. } => Some(*run),
                _ => None,
            })
            .collect()
    }

    /// The states `run` entered, in order (`Debug` text), exit state excluded.
    pub fn path(&self, run: RunId) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|e| match e {
                Event::StateEnter { run: r, state } if *r == run => Some(state.clone()),
                _ => None,
            })
            .collect()
    }

    /// Panics, listing both paths, unless `run` entered exactly `expected`.
    #[track_caller]
    pub fn assert_path(&self, run: RunId, expected: &[&str]) {
        let path = self.path(run);
        assert!(
            path.iter().map(String::as_str).eq(expected.iter().copied()),
            "run {run} took the path {path:?}, expected {expected:?}"
        );
    }

    /// How `run` ended: `Ok` with the exit state, `Err` with the error's text; `None`
    /// while it is still running.
    pub fn outcome(&self, run: RunId) -> Option<Result<String, String>> {
        self.lock().iter().find_map(|e| match e {
            Event::RunEnd { run: r, outcome } if *r == run => Some(outcome.clone()),
            _ => None,
        })
    }

    /// How many attempts of `task` started, over all runs.
    pub fn attempts(&self, task: &str) -> usize {
        self.count(|e| matches!(e, Event::TaskStart { task: t, .. } if t == task))
    }

    /// How many retries of `task` were scheduled, over all runs.
    pub fn retries(&self, task: &str) -> usize {
        self.count(|e| matches!(e, Event::Retry { task: t, .. } if t == task))
    }

    /// How many events satisfy `matches`.
    pub fn count(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.lock().iter().filter(|e| matches(e)).count()
    }

    /// The paths the recorded runs took, as a Mermaid flowchart: each state entered,
    /// with how many times runs entered it, and each transition taken, with how many
    /// times; a run that ended adds its exit state. Compare it with
    /// `Workflow::to_mermaid` to see which declared paths real runs use.
    pub fn to_mermaid(&self) -> String {
        use std::collections::BTreeMap;
        use std::fmt::Write as _;

        let mut visits: BTreeMap<String, usize> = BTreeMap::new();
        let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut last: std::collections::HashMap<RunId, String> = Default::default();
        for event in self.lock().iter() {
            let (run, state) = match event {
                Event::StateEnter { run, state } => (*run, state.clone()),
                Event::RunEnd {
                    run,
                    outcome: Ok(exit),
                } => (*run, exit.clone()),
                _ => continue,
            };
            *visits.entry(state.clone()).or_default() += 1;
            if let Some(previous) = last.insert(run, state.clone()) {
                *edges.entry((previous, state)).or_default() += 1;
            }
        }
        let ids: BTreeMap<&String, usize> =
            visits.keys().enumerate().map(|(i, s)| (s, i)).collect();
        let mut out = String::from("flowchart TD\n");
        for (state, count) in &visits {
            let label = state.replace('"', "#quot;");
            let _ = writeln!(out, "    s{}[\"{label} ×{count}\"]", ids[state]);
        }
        for ((from, to), count) in &edges {
            let _ = writeln!(out, "    s{} -- \"{count}\" --> s{}", ids[from], ids[to]);
        }
        out
    }

    /// Forgets every event.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

fn text(value: &dyn Debug) -> String {
    format!("{value:?}")
}

impl RunObserver for RecordingObserver {
    fn run_started(&self, run: RunId, initial: &dyn Debug) {
        self.push(Event::RunStart {
            run,
            state: text(initial),
        });
    }
    fn run_ended(&self, run: RunId, outcome: Result<&dyn Debug, &CanoError>) {
        let outcome = outcome.map(text).map_err(ToString::to_string);
        self.push(Event::RunEnd { run, outcome });
    }
    fn state_entered(&self, run: RunId, state: &dyn Debug) {
        self.push(Event::StateEnter {
            run,
            state: text(state),
        });
    }
    fn task_started(&self, run: RunId, state: &dyn Debug, task: &str, attempt: usize) {
        let (state, task) = (text(state), task.to_owned());
        self.push(Event::TaskStart {
            run,
            state,
            task,
            attempt,
        });
    }
    fn task_succeeded(&self, run: RunId, state: &dyn Debug, task: &str) {
        let (state, task) = (text(state), task.to_owned());
        self.push(Event::TaskSuccess { run, state, task });
    }
    fn task_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        let (state, task, error) = (text(state), task.to_owned(), error.to_string());
        self.push(Event::TaskFailure {
            run,
            state,
            task,
            error,
        });
    }
    fn task_retrying(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        attempt: usize,
        error: &CanoError,
        delay: Duration,
    ) {
        let (state, task, error) = (text(state), task.to_owned(), error.to_string());
        self.push(Event::Retry {
            run,
            state,
            task,
            attempt,
            error,
            delay,
        });
    }
    fn circuit_opened(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let (state, task, breaker) = (text(state), task.to_owned(), breaker.to_owned());
        self.push(Event::CircuitOpen {
            run,
            state,
            task,
            breaker,
        });
    }
    fn circuit_half_opened(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let (state, task, breaker) = (text(state), task.to_owned(), breaker.to_owned());
        self.push(Event::CircuitHalfOpen {
            run,
            state,
            task,
            breaker,
        });
    }
    fn circuit_closed(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let (state, task, breaker) = (text(state), task.to_owned(), breaker.to_owned());
        self.push(Event::CircuitClose {
            run,
            state,
            task,
            breaker,
        });
    }
    fn circuit_rejected(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let (state, task, breaker) = (text(state), task.to_owned(), breaker.to_owned());
        self.push(Event::CircuitRejected {
            run,
            state,
            task,
            breaker,
        });
    }
    fn throttled(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        limiter: &str,
        waited: Duration,
        admitted: bool,
    ) {
        let (state, task, limiter) = (text(state), task.to_owned(), limiter.to_owned());
        self.push(Event::Throttled {
            run,
            state,
            task,
            limiter,
            waited,
            admitted,
        });
    }
    fn checkpointed(&self, run: RunId, _workflow: &str, state: &dyn Debug, seq: u64) {
        self.push(Event::Checkpoint {
            run,
            state: text(state),
            seq,
        });
    }
    fn resumed(&self, run: RunId, _workflow: &str, state: &dyn Debug, seq: u64) {
        self.push(Event::Resume {
            run,
            state: text(state),
            seq,
        });
    }
    fn compensation_started(&self, run: RunId, state: &dyn Debug, task: &str) {
        let (state, task) = (text(state), task.to_owned());
        self.push(Event::CompensationStart { run, state, task });
    }
    fn compensation_succeeded(&self, run: RunId, state: &dyn Debug, task: &str) {
        let (state, task) = (text(state), task.to_owned());
        self.push(Event::CompensationSuccess { run, state, task });
    }
    fn compensation_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        let (state, task, error) = (text(state), task.to_owned(), error.to_string());
        self.push(Event::CompensationFailure {
            run,
            state,
            task,
            error,
        });
    }
}
