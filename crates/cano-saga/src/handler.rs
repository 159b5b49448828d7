//! Registering compensatable tasks, and the state handler that runs and undoes them.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{
    CanoError, CompensationFuture, HandlerFuture, HandlerInfo, Node, ResourceKey, Resources,
    StateContext, StateHandler, TaskConfig, TaskResult, Workflow, WorkflowState,
};

use crate::task::CompensatableTask;

/// Registers compensatable tasks: `Workflow::new(..).register_with_compensation(state, task)`.
pub trait SagaExt<S, K> {
    /// Runs `task` whenever the workflow enters `state`, and undoes that step with
    /// [`CompensatableTask::compensate`] if a later state of the run fails (see the
    /// [crate docs](crate)). A single task per state; the same task type registered at
    /// two states is compensated separately for each, with each step's own output.
    fn register_with_compensation<T: CompensatableTask<S, K>>(self, state: S, task: T) -> Self;
}

impl<S: WorkflowState, K: ResourceKey> SagaExt<S, K> for Workflow<S, K> {
    fn register_with_compensation<T: CompensatableTask<S, K>>(self, state: S, task: T) -> Self {
        let name = task.name();
        let handler = CompensatableHandler {
            config: task.config(),
            compensation_config: task.compensation_config(),
            undo_name: Cow::Owned(format!("{name}::compensate")),
            name,
            task: Arc::new(task),
            _state: PhantomData,
        };
        self.register_handler(state, handler)
    }
}

struct CompensatableHandler<T, S, K> {
    task: Arc<T>,
    config: TaskConfig,
    compensation_config: TaskConfig,
    name: Cow<'static, str>,
    /// The compensation's name in errors and observer events.
    undo_name: Cow<'static, str>,
    _state: PhantomData<fn() -> (S, K)>,
}

// The step and its undoing are run as nodes (not tasks: `Task` has a blanket impl for
// every `Node`, which would clash with a direct impl for a generic type), so the
// engine's retries, attempt timeouts, panic handling and observers apply to both.

/// The forward step; its output is left in `output`.
struct Step<'a, T: CompensatableTask<S, K>, S, K> {
    task: &'a T,
    name: &'a Cow<'static, str>,
    output: Mutex<Option<T::Output>>,
}

#[async_trait::async_trait]
impl<T, S, K> Node<S, K> for Step<'_, T, S, K>
where
    T: CompensatableTask<S, K>,
    S: Send + Sync + 'static,
    K: Send + Sync + 'static,
{
    type PrepResult = (TaskResult<S>, T::Output);
    type ExecResult = (TaskResult<S>, T::Output);

    async fn prep(&self, res: &Resources<K>) -> Result<Self::PrepResult, CanoError> {
        self.task.run(res).await
    }

    async fn exec(&self, done: Self::PrepResult) -> Self::ExecResult {
        done
    }

    async fn post(
        &self,
        _: &Resources<K>,
        (result, output): Self::ExecResult,
    ) -> Result<S, CanoError> {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = Some(output);
        match result {
            TaskResult::Single(next) => Ok(next),
            TaskResult::Split(_) => Err(CanoError::workflow(
                "a compensatable task returned TaskResult::Split",
            )
            .with_hint("a compensatable state runs one task: return TaskResult::Single")
            .permanent()),
        }
    }

    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

/// Where a compensation's output comes from: the saved bytes (decoded afresh for each
/// attempt), or the value itself when it could not be serialized (one attempt only,
/// since `compensate` takes it by value).
enum Source<'a, O> {
    Saved(&'a [u8]),
    Unsaved(Mutex<Option<O>>),
}

/// One compensation; `post` returns the state it undoes, which nothing reads.
struct Undo<'a, T: CompensatableTask<S, K>, S, K> {
    task: &'a T,
    name: &'a Cow<'static, str>,
    output: Source<'a, T::Output>,
    state: &'a S,
}

#[async_trait::async_trait]
impl<T, S, K> Node<S, K> for Undo<'_, T, S, K>
where
    T: CompensatableTask<S, K>,
    S: Clone + Send + Sync + 'static,
    K: Send + Sync + 'static,
{
    type PrepResult = ();
    type ExecResult = ();

    async fn prep(&self, res: &Resources<K>) -> Result<(), CanoError> {
        let output = match &self.output {
            Source::Saved(bytes) => Bincode::decode::<T::Output>(bytes).map_err(|e| {
                CanoError::store(format!(
                    "the saved output of task `{}` does not decode as a `{}`: {}",
                    self.name,
                    std::any::type_name::<T::Output>(),
                    e.message()
                ))
                .with_source(e)
                .with_hint("the output type changed since the step ran; compensate with the build that ran it")
                .permanent()
            })?,
            Source::Unsaved(value) => value
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| {
                    CanoError::task_execution(
                        "the unsaved output was used up by the first attempt; it cannot be retried",
                    )
                    .permanent()
                })?,
        };
        self.task.compensate(res, output).await
    }

    async fn exec(&self, (): ()) {}

    async fn post(&self, _: &Resources<K>, (): ()) -> Result<S, CanoError> {
        Ok(self.state.clone())
    }

    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}

impl<T, S, K> StateHandler<S, K> for CompensatableHandler<T, S, K>
where
    T: CompensatableTask<S, K>,
    S: WorkflowState,
    K: ResourceKey,
{
    fn handle<'a>(&'a self, cx: StateContext<'a, S, K>) -> HandlerFuture<'a, S> {
        Box::pin(async move {
            let step = Step {
                task: &*self.task,
                name: &self.name,
                output: Mutex::new(None),
            };
            let next = match cx.run_task(&step, &self.config).await? {
                TaskResult::Single(next) => next,
                TaskResult::Split(_) => unreachable!("a node returns one state"),
            };
            let Some(output) = step.output.into_inner().unwrap_or_else(|p| p.into_inner()) else {
                // Unreachable: `Step` keeps the output of every attempt that succeeds.
                return Err(CanoError::workflow(
                    "a compensatable step succeeded without leaving an output to compensate",
                )
                .at(cx.state(), &self.name)
                .with_hint("this is a bug in cano-saga; please report it"));
            };
            match Bincode::encode(&output) {
                Ok(bytes) => {
                    cx.record_compensation(bytes)?;
                    Ok(next)
                }
                Err(error) => Err(self.unsaved(&cx, output, error).await),
            }
        })
    }

    fn compensates(&self) -> bool {
        true
    }

    fn compensate<'a>(
        &'a self,
        cx: StateContext<'a, S, K>,
        output: &'a [u8],
    ) -> CompensationFuture<'a> {
        Box::pin(async move {
            let undo = Undo {
                task: &*self.task,
                name: &self.undo_name,
                output: Source::Saved(output),
                state: cx.state(),
            };
            cx.run_task(&undo, &self.compensation_config)
                .await
                .map(drop)
        })
    }

    fn info(&self) -> HandlerInfo {
        HandlerInfo {
            kind: "compensatable",
            tasks: vec![self.name.clone()],
        }
    }
}

impl<T, S, K> CompensatableHandler<T, S, K>
where
    T: CompensatableTask<S, K>,
    S: WorkflowState,
    K: ResourceKey,
{
    /// The step succeeded but its output cannot be serialized, so it could never be
    /// compensated later: undo it now (once, under the compensation's attempt timeout),
    /// and fail the run, which rolls back the steps before it.
    async fn unsaved(
        &self,
        cx: &StateContext<'_, S, K>,
        output: T::Output,
        error: CanoError,
    ) -> CanoError {
        let failure = CanoError::task_execution(format!(
            "the step succeeded, but its output (a `{}`) could not be serialized: {}",
            std::any::type_name::<T::Output>(),
            error.message()
        ))
        .at(cx.state(), &self.name)
        .with_source(error)
        .with_hint("make the output's Serialize implementation succeed for every value; the step was compensated at once")
        .permanent();
        let undo = Undo {
            task: &*self.task,
            name: &self.undo_name,
            output: Source::Unsaved(Mutex::new(Some(output))),
            state: cx.state(),
        };
        let mut once = TaskConfig::minimal();
        if let Some(limit) = self.compensation_config.attempt_timeout() {
            once = once.with_attempt_timeout(limit);
        }
        match cx.run_task(&undo, &once).await {
            Ok(_) => failure,
            Err(undo_error) => CanoError::compensation_failed(vec![failure, undo_error]),
        }
    }
}
