//! [`WorkflowObserver`]: cano 0.13's observer, whose callbacks name the state or task
//! as text, and how such an observer is attached next to the richer [`RunObserver`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use super::RunObserver;
use crate::error::CanoError;
use crate::run::RunId;

/// Receives workflow events by name (cano 0.13's callbacks). Every method defaults to
/// doing nothing; implement those you need and attach the observer with
/// `Workflow::with_observer`.
///
/// Each callback is told what 0.13 told it: the state's `Debug` text, the task's name,
/// the workflow id. The run it belongs to is `RunContext::current()` inside the
/// callback; for the run id, state value, attempt and delay as arguments, implement
/// [`RunObserver`] instead. Callbacks run on the engine's task, between awaits: keep
/// them short and never block.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use cano_core::{CanoError, Task, TaskResult, Workflow, WorkflowObserver};
///
/// #[derive(Default)]
/// struct Log(Mutex<Vec<String>>);
///
/// impl WorkflowObserver for Log {
///     fn on_state_enter(&self, state: &str) {
///         self.0.lock().unwrap().push(format!("enter {state}"));
///     }
///     fn on_task_success(&self, task_id: &str) {
///         self.0.lock().unwrap().push(format!("ok {task_id}"));
///     }
/// }
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum Step { Work, Done }
///
/// struct Work;
/// #[async_trait::async_trait]
/// impl Task<Step> for Work {
///     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
///         Ok(TaskResult::Single(Step::Done))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), CanoError> {
/// let log = Arc::new(Log::default());
/// let workflow = Workflow::bare()
///     .register(Step::Work, Work)
///     .add_exit_state(Step::Done)
///     .with_observer(log.clone());
/// workflow.orchestrate(Step::Work).await?;
/// assert_eq!(*log.0.lock().unwrap(), ["enter Work", "ok Work", "enter Done"]);
/// # Ok(())
/// # }
/// ```
pub trait WorkflowObserver: Send + Sync + 'static {
    /// The run entered a state, the first one and the exit state included; `state` is
    /// its `Debug` text.
    fn on_state_enter(&self, _state: &str) {}

    /// A task is about to run (before its first attempt; once however often it is
    /// retried). `task_id` is its name.
    fn on_task_start(&self, _task_id: &str) {}

    /// The task succeeded (after any retries).
    fn on_task_success(&self, _task_id: &str) {}

    /// The task failed for good: its retries spent, a timeout not retried, a panic, or
    /// an open circuit breaker.
    fn on_task_failure(&self, _task_id: &str, _err: &CanoError) {}

    /// Attempt `attempt` (from 1) of the task failed and the next one follows.
    fn on_retry(&self, _task_id: &str, _attempt: u32) {}

    /// A circuit breaker refused an attempt of the task (followed by
    /// [`on_task_failure`](Self::on_task_failure) with a `CircuitOpen` error when the
    /// task gives up).
    fn on_circuit_open(&self, _task_id: &str) {}

    /// Checkpoint row `sequence` of a run of the workflow with id `workflow_id` was
    /// written (once per state entered, with a checkpoint store).
    fn on_checkpoint(&self, _workflow_id: &str, _sequence: u64) {}

    /// A run of the workflow with id `workflow_id` was resumed from its checkpoints;
    /// `sequence` is the row that claimed it.
    fn on_resume(&self, _workflow_id: &str, _sequence: u64) {}

    /// The run ran past its workflow timeout `limit`, after `elapsed`.
    fn on_workflow_timeout(&self, _elapsed: Duration, _limit: Duration) {}

    /// The run was cancelled in `state` (its `Debug` text); called once, before any
    /// rollback.
    fn on_cancelled(&self, _state: &str) {}

    /// A finished run's checkpoint log could not be cleared (the run still finished;
    /// its log was closed instead, or is left for an operator to clear).
    fn on_checkpoint_clear_failed(&self, _workflow_id: &str, _error: &CanoError) {}

    /// In cano 0.13 a resume dropped a row naming a state the workflow no longer has.
    /// cano never does that: such a resume is refused with
    /// `CanoError::WorkflowVersionMismatch` or `Configuration` before anything runs,
    /// so this is never called. It is here so 0.13 observers compile unchanged.
    fn on_unknown_resume_state(
        &self,
        _workflow_id: &str,
        _sequence: u64,
        _unknown_state_label: &str,
    ) {
    }
}

/// Every [`WorkflowObserver`] is a [`RunObserver`]: each rich event is passed on to the
/// names-only callback it corresponds to, formatting the state only then.
impl<T: WorkflowObserver + ?Sized> RunObserver for T {
    fn run_ended(&self, _run: RunId, outcome: Result<&dyn Debug, &CanoError>) {
        // 0.13 tells of the exit state as of any other state entered.
        if let Ok(exit) = outcome {
            self.on_state_enter(&format!("{exit:?}"));
        }
    }

    fn state_entered(&self, _run: RunId, state: &dyn Debug) {
        self.on_state_enter(&format!("{state:?}"));
    }

    fn task_started(&self, _run: RunId, _state: &dyn Debug, task: &str, attempt: usize) {
        if attempt <= 1 {
            self.on_task_start(task);
        }
    }

    fn task_succeeded(&self, _run: RunId, _state: &dyn Debug, task: &str) {
        self.on_task_success(task);
    }

    fn task_failed(&self, _run: RunId, _state: &dyn Debug, task: &str, error: &CanoError) {
        self.on_task_failure(task, error);
    }

    fn task_retrying(
        &self,
        _run: RunId,
        _state: &dyn Debug,
        task: &str,
        attempt: usize,
        _error: &CanoError,
        _delay: Duration,
    ) {
        self.on_retry(task, u32::try_from(attempt).unwrap_or(u32::MAX));
    }

    fn circuit_rejected(&self, _run: RunId, _state: &dyn Debug, task: &str, _breaker: &str) {
        self.on_circuit_open(task);
    }

    fn checkpointed(&self, _run: RunId, workflow: &str, _state: &dyn Debug, seq: u64) {
        self.on_checkpoint(workflow, seq);
    }

    fn resumed(&self, _run: RunId, workflow: &str, _state: &dyn Debug, seq: u64) {
        self.on_resume(workflow, seq);
    }

    fn checkpoint_clear_failed(&self, _run: RunId, workflow: &str, error: &CanoError) {
        self.on_checkpoint_clear_failed(workflow, error);
    }

    fn cancelled(&self, _run: RunId, state: &dyn Debug) {
        self.on_cancelled(&format!("{state:?}"));
    }

    fn timed_out(&self, _run: RunId, _state: &dyn Debug, elapsed: Duration, limit: Duration) {
        self.on_workflow_timeout(elapsed, limit);
    }
}

/// What `Workflow::with_observer` takes, behind an `Arc`: a type implementing
/// [`RunObserver`] or [`WorkflowObserver`], or either trait object.
pub trait ObserverArc {
    /// The observer as the engine holds it.
    fn into_run_observer(self: Arc<Self>) -> Arc<dyn RunObserver>;
}

impl<T: RunObserver + 'static> ObserverArc for T {
    fn into_run_observer(self: Arc<Self>) -> Arc<dyn RunObserver> {
        self
    }
}

impl ObserverArc for dyn RunObserver {
    fn into_run_observer(self: Arc<Self>) -> Arc<dyn RunObserver> {
        self
    }
}

impl ObserverArc for dyn WorkflowObserver {
    fn into_run_observer(self: Arc<Self>) -> Arc<dyn RunObserver> {
        Arc::new(Named(self))
    }
}

/// A `dyn WorkflowObserver` as a `RunObserver` (a trait object cannot be turned into
/// another trait's object without a wrapper).
struct Named(Arc<dyn WorkflowObserver>);

impl WorkflowObserver for Named {
    fn on_state_enter(&self, state: &str) {
        self.0.on_state_enter(state);
    }
    fn on_task_start(&self, task_id: &str) {
        self.0.on_task_start(task_id);
    }
    fn on_task_success(&self, task_id: &str) {
        self.0.on_task_success(task_id);
    }
    fn on_task_failure(&self, task_id: &str, err: &CanoError) {
        self.0.on_task_failure(task_id, err);
    }
    fn on_retry(&self, task_id: &str, attempt: u32) {
        self.0.on_retry(task_id, attempt);
    }
    fn on_circuit_open(&self, task_id: &str) {
        self.0.on_circuit_open(task_id);
    }
    fn on_checkpoint(&self, workflow_id: &str, sequence: u64) {
        self.0.on_checkpoint(workflow_id, sequence);
    }
    fn on_resume(&self, workflow_id: &str, sequence: u64) {
        self.0.on_resume(workflow_id, sequence);
    }
    fn on_workflow_timeout(&self, elapsed: Duration, limit: Duration) {
        self.0.on_workflow_timeout(elapsed, limit);
    }
    fn on_cancelled(&self, state: &str) {
        self.0.on_cancelled(state);
    }
    fn on_checkpoint_clear_failed(&self, workflow_id: &str, error: &CanoError) {
        self.0.on_checkpoint_clear_failed(workflow_id, error);
    }
    fn on_unknown_resume_state(&self, workflow_id: &str, sequence: u64, label: &str) {
        self.0.on_unknown_resume_state(workflow_id, sequence, label);
    }
}
