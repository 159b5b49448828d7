//! Stepped tasks: long work done in steps, each ending at a cursor that is saved, so a
//! resumed run continues from the last saved cursor instead of from the start.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use cano_core::checkpoint::{Bincode, Codec};
use cano_core::run::RunJournal;
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
    /// Finished: move on as this result says (one state: a stepped state is not a
    /// split, and `Split` fails the run with `CanoError::Workflow`).
    Done(TaskResult<S>),
}

impl<C, S> StepOutcome<C, S> {
    /// Finished: move to `state`.
    pub fn done(state: S) -> Self {
        Self::Done(TaskResult::Single(state))
    }
}

/// The cursor of a stepped task used through a pointer: bytes it encodes itself
/// (cano 0.13's name).
pub type DefaultStepCursor = Vec<u8>;

/// A stepped task behind a pointer, any type with a byte cursor (cano 0.13's name).
pub type DynSteppedTask<S, K = DefaultKey> =
    dyn SteppedTask<S, K, Cursor = DefaultStepCursor> + Send + Sync;

/// A shared stepped task of any type with a byte cursor (cano 0.13's name).
pub type SteppedTaskObject<S, K = DefaultKey> = Arc<DynSteppedTask<S, K>>;

/// Runs `task`'s steps to the end in memory, from no cursor, saving nothing: what the
/// `Task` impl that `#[task::stepped]` writes calls, for a stepped task registered with
/// `Workflow::register`. Register it with
/// [`register_stepped`](SteppedWorkflow::register_stepped) instead to have each cursor
/// saved and a crashed run resumed from the last one.
pub async fn run_stepped<T, S, K>(task: &T, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>
where
    T: SteppedTask<S, K> + ?Sized,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    let mut cursor = None;
    loop {
        match task.step(res, cursor.take()).await? {
            StepOutcome::More(next) => cursor = Some(next),
            StepOutcome::Done(result) => return Ok(result),
        }
        // Steps that never wait must still let other tasks run.
        tokio::task::consume_budget().await;
    }
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
    type Cursor: Serialize + DeserializeOwned + Send + Sync + 'static;

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
/// observers apply to it. A `More` cursor is left in `next`. The cursor it starts from
/// is kept encoded, so that each attempt gets its own copy without the cursor having
/// to be `Clone`.
struct OneStep<'a, T: SteppedTask<S, K>, S, K> {
    task: &'a T,
    cursor: Option<Vec<u8>>,
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
        let cursor = match &self.cursor {
            None => None,
            Some(bytes) => Some(decode_cursor::<T::Cursor>(bytes, self.name)?),
        };
        self.task.step(res, cursor).await
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
            StepOutcome::Done(TaskResult::Single(state)) => {
                *next = None;
                Ok(state)
            }
            StepOutcome::Done(TaskResult::Split(states)) => Err(CanoError::workflow(format!(
                "stepped task `{}` finished with TaskResult::Split of {} states; a stepped state moves to one state",
                self.name,
                states.len()
            ))
            .with_hint("finish with TaskResult::Single (StepOutcome::done(state))")
            .permanent()),
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
                Some(bytes) => {
                    // Checked here, before the first attempt, so a bad saved cursor
                    // fails the run once rather than every retry.
                    decode_cursor::<T::Cursor>(&bytes, &self.name)?;
                    Some(bytes)
                }
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
                let next = Bincode::encode(&next)?;
                if let Some(journal) = &journal {
                    journal.record_step(next.clone()).await?;
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

/// A saved or in-memory cursor, decoded; the error names the task and the type.
fn decode_cursor<C: DeserializeOwned>(bytes: &[u8], name: &str) -> Result<C, CanoError> {
    Bincode::decode::<C>(bytes).map_err(|e| {
        CanoError::store(format!(
            "the saved cursor of stepped task `{name}` does not decode as a `{}`: {}",
            std::any::type_name::<C>(),
            e.message()
        ))
        .with_source(e)
        .with_hint("the cursor type changed since the run was written; resume with the build that wrote it")
        .permanent()
    })
}
