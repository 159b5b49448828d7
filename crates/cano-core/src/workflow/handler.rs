//! The extension point: [`StateHandler`], "what runs when the machine enters this
//! state". Single tasks are built in; split/join, sagas and stepped tasks come from
//! their own crates as handlers registered with [`Workflow::register_handler`].
//!
//! [`Workflow::register_handler`]: crate::Workflow::register_handler

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::CanoError;
use crate::observer::Observers;
use crate::resource::{DefaultKey, Resources};
use crate::run::RunContext;
use crate::task::{RegisteredTask, Task, TaskConfig, TaskResult};
use crate::workflow::execute::{LooseTask, Surroundings, execute_task};
use crate::workflow::saga_stack::Compensations;

/// The boxed future of a state handler: the next state.
pub type HandlerFuture<'a, S> = Pin<Box<dyn Future<Output = Result<S, CanoError>> + Send + 'a>>;

/// The boxed future of a compensation ([`StateHandler::compensate`]).
pub type CompensationFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CanoError>> + Send + 'a>>;

/// What a handler looks like from outside, for validation, diagrams and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The kind of handler: `"task"`, `"split"`, `"compensatable"`, ...
    pub kind: &'static str,
    /// The names of the tasks it runs.
    pub tasks: Vec<Cow<'static, str>>,
}

/// A signal a wait state waits for: its name and the type its payload decodes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalInfo {
    /// The signal's name.
    pub name: String,
    /// The payload's Rust type, by name (for errors).
    pub payload: &'static str,
    /// The payload's type id, so a sender of another type is refused before sending.
    pub type_id: std::any::TypeId,
}

/// Which kind of handler runs a state, in cano 0.13's words: what each `register*`
/// method of the builder maps a state to. Read it with [`HandlerInfo::entry`] or
/// [`Workflow::state_entry`](crate::Workflow::state_entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateEntry {
    /// One task (`register`): plain, poll, batch, timer and stream tasks alike.
    Single,
    /// Tasks in parallel joined by a strategy (`register_split`).
    Split,
    /// A router task (`register_router`): picks the next state, writes no row.
    Router,
    /// A stepped task (`register_stepped`): the engine owns the step loop.
    Stepped,
    /// A compensatable task (`register_with_compensation`).
    CompensatableSingle,
    /// A handler of another kind (a custom [`StateHandler`]), by its kind.
    Custom(&'static str),
}

impl HandlerInfo {
    /// The kind of state this handler makes, as a [`StateEntry`].
    pub fn entry(&self) -> StateEntry {
        match self.kind {
            "task" => StateEntry::Single,
            "split" => StateEntry::Split,
            "router" => StateEntry::Router,
            "stepped" => StateEntry::Stepped,
            "compensatable" => StateEntry::CompensatableSingle,
            other => StateEntry::Custom(other),
        }
    }
}

/// Runs a state: given the state and the run's environment, produce the next state.
///
/// Implement it to add a new kind of state; the engine knows nothing else about it.
pub trait StateHandler<S, K = DefaultKey>: Send + Sync + 'static {
    /// Runs the state.
    fn handle<'a>(&'a self, cx: StateContext<'a, S, K>) -> HandlerFuture<'a, S>;

    /// Describes the handler.
    fn info(&self) -> HandlerInfo;

    /// Mistakes in the handler's own configuration that can be seen without running it
    /// (a quorum of zero, an empty task list). [`Workflow::validate`] and every run
    /// report them, prefixed with the state. None by default.
    ///
    /// [`Workflow::validate`]: crate::Workflow::validate
    fn check(&self) -> Vec<String> {
        Vec::new()
    }

    /// The states this handler can move to, when it knows them (a split always moves to
    /// its join state). [`Workflow::validate`] checks that each one has a handler or is
    /// an exit state. `None`, the default, means "any state".
    ///
    /// [`Workflow::validate`]: crate::Workflow::validate
    fn targets(&self) -> Option<Vec<S>> {
        None
    }

    /// The targets of [`targets`](Self::targets), each with what leads there (a
    /// signal's name, `"timeout"`), for drawings to label their edges. `None`, the
    /// default, draws them unlabelled.
    fn labelled_targets(&self) -> Option<Vec<(String, S)>> {
        None
    }

    /// The signals this state waits for (a wait state's), with their payload types.
    /// Empty by default. A workflow with any needs a store with a signal inbox, and
    /// `Workflow::signal` only sends names some state waits for.
    fn signals(&self) -> Vec<SignalInfo> {
        Vec::new()
    }

    /// Whether this state may park the run (a wait state): the workflow then needs a
    /// store with a signal inbox. `false` by default.
    fn parks(&self) -> bool {
        false
    }

    /// Findings that do not stop a run but deserve a look (a wait that may never
    /// end), reported by `Workflow::warnings`. None by default.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether entering this state writes a checkpoint row (when the workflow has a
    /// store). `true` by default; a pure router, which changes nothing worth
    /// recovering, says `false`.
    fn writes_checkpoint(&self) -> bool {
        true
    }

    /// Whether this handler can undo its work: it records an output with
    /// [`StateContext::record_compensation`] when a step succeeds, and
    /// [`compensate`](Self::compensate) undoes that step given the output. `false` by
    /// default. A workflow with such a state keeps a compensation stack per run and
    /// drains it, newest step first, when the run fails.
    fn compensates(&self) -> bool {
        false
    }

    /// Undoes one step this handler completed in `cx.state()`, given the output it
    /// recorded then. Called while a failed run rolls back (resources are still set
    /// up); an error, a panic or running out of the rollback's time is reported and the
    /// rollback goes on with the next step. Handlers that do not
    /// [`compensate`](Self::compensates) are never asked.
    fn compensate<'a>(
        &'a self,
        cx: StateContext<'a, S, K>,
        output: &'a [u8],
    ) -> CompensationFuture<'a> {
        let _ = (cx, output);
        Box::pin(std::future::ready(Err(CanoError::configuration(
            "this state's handler cannot compensate",
        )
        .with_hint(
            "implement StateHandler::compensates and compensate together",
        ))))
    }
}

/// What a [`StateHandler`] is given: the state, the resources, the run, the observers.
pub struct StateContext<'a, S, K = DefaultKey> {
    pub(crate) state: &'a S,
    pub(crate) env: &'a TaskEnv<K>,
    /// The run's compensation stack, in workflows with a compensatable state (and not
    /// while compensating).
    pub(crate) saga: Option<&'a Compensations<S>>,
}

impl<'a, S, K> StateContext<'a, S, K>
where
    S: Send + Sync + std::fmt::Debug + 'static,
    K: Send + Sync + 'static,
{
    /// The state being run.
    pub fn state(&self) -> &'a S {
        self.state
    }

    /// The run's environment; clone it to run tasks on other tokio tasks.
    pub fn env(&self) -> &'a TaskEnv<K> {
        self.env
    }

    /// The workflow's resources.
    pub fn resources(&self) -> &'a Resources<K> {
        &self.env.resources
    }

    /// The run being executed.
    pub fn run(&self) -> &'a RunContext {
        &self.env.run
    }

    /// Records `output` (encoded) as what undoes the step this handler just completed:
    /// the engine pushes it onto the run's compensation stack when the handler returns
    /// and, with a checkpoint store, saves it with the run. One output per step; only
    /// for handlers that [`compensate`](StateHandler::compensates).
    pub fn record_compensation(&self, output: Vec<u8>) -> Result<(), CanoError> {
        match self.saga {
            Some(saga) => saga.record(output),
            None => Err(CanoError::configuration(
                "a compensation output was recorded outside a compensatable step",
            )
            .at(self.state, "")
            .with_hint(
                "record outputs from the handle() of a StateHandler whose compensates() is true",
            )),
        }
    }

    /// Runs `task` for this state the way the engine runs any task: with its config's
    /// retries and attempt timeout, a panic caught as an error, and observers told.
    pub async fn run_task(
        &self,
        task: &dyn Task<S, K>,
        config: &TaskConfig,
    ) -> Result<TaskResult<S>, CanoError> {
        self.env.run_task(self.state, task, config).await
    }
}

/// Everything a task needs from its run, owned and cheap to clone (three `Arc`s), so
/// handlers can run tasks on spawned tokio tasks.
pub struct TaskEnv<K = DefaultKey> {
    pub(crate) resources: Arc<Resources<K>>,
    pub(crate) run: RunContext,
    pub(crate) observers: Observers,
}

impl<K> Clone for TaskEnv<K> {
    fn clone(&self) -> Self {
        Self {
            resources: self.resources.clone(),
            run: self.run.clone(),
            observers: self.observers.clone(),
        }
    }
}

impl<K: Send + Sync + 'static> TaskEnv<K> {
    /// The workflow's resources.
    pub fn resources(&self) -> &Arc<Resources<K>> {
        &self.resources
    }

    /// The run being executed.
    pub fn run(&self) -> &RunContext {
        &self.run
    }

    /// The workflow's observers.
    pub fn observers(&self) -> &Observers {
        &self.observers
    }

    /// Runs a registered task in `state` (see [`StateContext::run_task`]); the task's
    /// config and name were read once when it was registered.
    pub fn run_registered<'a, S>(
        &'a self,
        state: &'a S,
        task: &'a RegisteredTask<S, K>,
    ) -> impl Future<Output = Result<TaskResult<S>, CanoError>> + 'a
    where
        S: Send + Sync + std::fmt::Debug + 'static,
    {
        execute_task(task, state, self)
    }

    /// Runs `task` in `state` with its config (see [`StateContext::run_task`]).
    pub async fn run_task<S>(
        &self,
        state: &S,
        task: &dyn Task<S, K>,
        config: &TaskConfig,
    ) -> Result<TaskResult<S>, CanoError>
    where
        S: Send + Sync + std::fmt::Debug + 'static,
    {
        let task = LooseTask {
            task,
            name: task.name(),
            config,
        };
        execute_task(&task, state, self).await
    }
}

// A split branch's surroundings are its `TaskEnv` (one pointer in the task's future).
impl<'a, K: 'a> Surroundings<'a, K> for &'a TaskEnv<K> {
    fn resources(self) -> &'a Resources<K> {
        &self.resources
    }
    fn run(self) -> &'a RunContext {
        &self.run
    }
    fn observers(self) -> &'a Observers {
        &self.observers
    }
}
