//! Stepped tasks: long work done in steps, each ending at a cursor that is saved, so a
//! resumed run continues from the last saved cursor instead of from the start.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{
    CanoError, DefaultKey, HandlerFuture, HandlerInfo, Node, ResourceKey, Resources, StateContext,
    StateHandler, TaskConfig, TaskResult, Workflow, WorkflowState,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What one step ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome<C, S> {
    /// More to do: the next step starts from this cursor (which is saved first).
    More(C),
    /// Finished: move to this state.
    Done(S),
}

/// Work done in steps from a serializable cursor: pages of an API, batches of a
/// table, chunks of a file. Register it with
/// [`register_stepped`](SteppedWorkflow::register_stepped).
///
/// The engine owns the loop: it calls [`step`](Self::step) with `None` first, then with
/// each cursor a step returned, until one returns [`StepOutcome::Done`]. With a
/// checkpoint store each cursor is saved (a `Step` row, with the run's durable data)
/// before the next step starts, so after a crash the run resumes at the step that was
/// running, with the cursor it started from. A step must therefore tolerate running
/// twice from the same cursor.
///
/// Each step is run like a task: with the retries and attempt timeout of
/// [`config`](Self::config), a panic caught as an error.
#[async_trait::async_trait]
pub trait SteppedTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// Where the work stands between steps.
    type Cursor: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// Does one step from `cursor` (`None` on the first).
    async fn step(
        &self,
        res: &Resources<K>,
        cursor: Option<Self::Cursor>,
    ) -> Result<StepOutcome<Self::Cursor, S>, CanoError>;

    /// Retries and timeout for each step (the task default: three retries with
    /// exponential backoff).
    fn config(&self) -> TaskConfig {
        TaskConfig::default()
    }

    /// The name used in errors and observer events.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(cano_core::short_type_name::<Self>())
    }
}

/// Registers stepped tasks: `Workflow::new(..).register_stepped(state, task)`.
pub trait SteppedWorkflow<S, K> {
    /// Runs `task` step by step whenever the workflow enters `state` (see
    /// [`SteppedTask`]).
    fn register_stepped<T: SteppedTask<S, K>>(self, state: S, task: T) -> Self;
}

impl<S: WorkflowState, K: ResourceKey> SteppedWorkflow<S, K> for Workflow<S, K> {
    fn register_stepped<T: SteppedTask<S, K>>(self, state: S, task: T) -> Self {
        let handler = SteppedHandler {
            config: task.config(),
            name: task.name(),
            task: Arc::new(task),
        };
        self.register_handler(state, handler)
    }
}

struct SteppedHandler<T> {
    task: Arc<T>,
    config: TaskConfig,
    name: Cow<'static, str>,
}

/// One step, as a task, so that the engine's retries, timeouts, panic handling and
/// observers apply to it. A `More` cursor is left in `next`.
struct OneStep<'a, T: SteppedTask<S, K>, S, K> {
    task: &'a T,
    cursor: Option<T::Cursor>,
    state: &'a S,
    name: &'a Cow<'static, str>,
    next: Mutex<Option<T::Cursor>>,
}

// A node, not a task: `Task` has a blanket impl for every `Node`, which would clash
// with a direct impl for a generic type. `prep` is the step; `post` keeps its cursor.
#[async_trait::async_trait]
impl<T, S, K> Node<S, K> for OneStep<'_, T, S, K>
where
    T: SteppedTask<S, K>,
    S: Clone + Send + Sync + 'static,
    K: Send + Sync + 'static,
{
    type PrepResult = StepOutcome<T::Cursor, S>;
    type ExecResult = StepOutcome<T::Cursor, S>;

    async fn prep(&self, res: &Resources<K>) -> Result<Self::PrepResult, CanoError> {
        self.task.step(res, self.cursor.clone()).await
    }

    async fn exec(&self, outcome: Self::PrepResult) -> Self::ExecResult {
        outcome
    }

    async fn post(&self, _: &Resources<K>, outcome: Self::ExecResult) -> Result<S, CanoError> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            StepOutcome::More(cursor) => {
                *next = Some(cursor);
                Ok(self.state.clone())
            }
            StepOutcome::Done(state) => {
                *next = None;
                Ok(state)
            }
        }
    }

    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

impl<T, S, K> StateHandler<S, K> for SteppedHandler<T>
where
    T: SteppedTask<S, K>,
    S: WorkflowState,
    K: ResourceKey,
{
    fn handle<'a>(&'a self, cx: StateContext<'a, S, K>) -> HandlerFuture<'a, S> {
        Box::pin(async move {
            let journal = cx.run().journal().cloned();
            let mut cursor = match journal.as_ref().and_then(|j| j.take_resumed_cursor()) {
                None => None,
                Some(bytes) => Some(Bincode::decode::<T::Cursor>(&bytes).map_err(|e| {
                    CanoError::store(format!(
                        "the saved cursor of stepped task `{}` does not decode as a `{}`: {}",
                        self.name,
                        std::any::type_name::<T::Cursor>(),
                        e.message()
                    ))
                    .with_source(e)
                    .with_hint("the cursor type changed since the run was written; resume with the build that wrote it")
                    .permanent()
                })?),
            };
            loop {
                if cx.run().is_cancelled() {
                    return Err(CanoError::cancelled(
                        "the run was cancelled between two steps",
                    ));
                }
                let step = OneStep {
                    task: &*self.task,
                    cursor: cursor.take(),
                    state: cx.state(),
                    name: &self.name,
                    next: Mutex::new(None),
                };
                let next_state = match cx.run_task(&step, &self.config).await? {
                    TaskResult::Single(state) => state,
                    TaskResult::Split(_) => unreachable!("a step always returns one state"),
                };
                let Some(next) = step.next.into_inner().unwrap_or_else(|p| p.into_inner()) else {
                    return Ok(next_state);
                };
                if let Some(journal) = &journal {
                    journal.record_step(Bincode::encode(&next)?).await?;
                }
                cursor = Some(next);
                // A stepped task whose steps never wait must still let others run.
                tokio::task::consume_budget().await;
            }
        })
    }

    fn info(&self) -> HandlerInfo {
        HandlerInfo {
            kind: "stepped",
            tasks: vec![self.name.clone()],
        }
    }
}
