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
use crate::workflow::execute::{LooseTask, execute_task};

/// The boxed future of a state handler: the next state.
pub type HandlerFuture<'a, S> = Pin<Box<dyn Future<Output = Result<S, CanoError>> + Send + 'a>>;

/// What a handler looks like from outside, for validation, diagrams and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerInfo {
    /// The kind of handler: `"task"`, `"split"`, `"compensatable"`, ...
    pub kind: &'static str,
    /// The names of the tasks it runs.
    pub tasks: Vec<Cow<'static, str>>,
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

    /// Whether entering this state writes a checkpoint row (when the workflow has a
    /// store). `true` by default; a pure router, which changes nothing worth
    /// recovering, says `false`.
    fn writes_checkpoint(&self) -> bool {
        true
    }
}

/// What a [`StateHandler`] is given: the state, the resources, the run, the observers.
pub struct StateContext<'a, S, K = DefaultKey> {
    pub(crate) state: &'a S,
    pub(crate) env: &'a TaskEnv<K>,
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
        execute_task(task, state, &self.resources, &self.run, &self.observers)
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
        execute_task(&task, state, &self.resources, &self.run, &self.observers).await
    }
}
