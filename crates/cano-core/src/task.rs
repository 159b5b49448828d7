//! Tasks: the code that runs when the workflow enters a state.
//!
//! Implement [`Task::run`] (or [`Task::run_bare`] when the task needs no resources),
//! write `#[task]` on the impl block so `async fn` can be used, and register the task
//! for a state. The task returns the state to move to next.
//!
//! How a task is retried and bounded is its [`TaskConfig`], read once when the task is
//! registered.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cano_circuit::{CircuitBreaker, RateLimiter};
use cano_retry::{Retry, RetryMode};

use crate::error::CanoError;
use crate::resource::{DefaultKey, Resources};
use crate::util::short_type_name;

/// What a task hands back: the next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult<S> {
    /// Move to this state.
    Single(S),
    /// Several next states at once; only split handlers accept this, a state registered
    /// with `register` fails with [`CanoError::Workflow`].
    Split(Vec<S>),
}

/// The boxed future a task returns (what `#[task]` turns an `async fn` into).
pub type TaskFuture<'a, S> =
    Pin<Box<dyn Future<Output = Result<TaskResult<S>, CanoError>> + Send + 'a>>;

/// How the engine runs a task: its retry mode, per-attempt timeout, and what admits
/// each attempt (a circuit breaker, a rate limiter).
///
/// The default is documented on [`TaskConfig::default`]; [`TaskConfig::minimal`] turns
/// retries off.
///
/// Before every attempt the engine asks the circuit breaker for a permit (an open
/// breaker fails the attempt with [`CanoError::CircuitOpen`] at once, and the retry
/// loop stops there rather than spend its attempts), then waits for the rate limiter,
/// then runs the task body under the attempt timeout and reports the outcome to the
/// breaker.
#[derive(Debug, Clone)]
///
/// The fields are public, as in cano 0.13: `TaskConfig { retry_mode, ..Default::default() }`
/// builds one as well as the `with_*` methods do.
pub struct TaskConfig {
    /// How failed attempts are retried.
    pub retry_mode: RetryMode,
    /// The longest one attempt may run (`None`: no limit; `Duration::MAX` is no limit
    /// too).
    pub attempt_timeout: Option<Duration>,
    /// The breaker every attempt asks first, if any.
    pub circuit_breaker: Option<Arc<CircuitBreaker>>,
    /// The rate limiter every attempt waits for, if any.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// The longest an attempt waits for the rate limiter (`None`: as long as needed).
    pub max_throttle_wait: Option<Duration>,
}

impl PartialEq for TaskConfig {
    /// Equal settings, and the very same breaker and limiter (compared by identity).
    fn eq(&self, other: &Self) -> bool {
        fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        self.retry_mode == other.retry_mode
            && self.attempt_timeout == other.attempt_timeout
            && same(&self.circuit_breaker, &other.circuit_breaker)
            && same(&self.rate_limiter, &other.rate_limiter)
            && self.max_throttle_wait == other.max_throttle_wait
    }
}

impl Default for TaskConfig {
    /// Up to 3 retries with exponential backoff (100 ms, 200 ms, 400 ms, ±10 % jitter),
    /// no per-attempt timeout. Errors that cannot pass on a retry (configuration and
    /// workflow errors, errors marked [`CanoError::permanent`], panics) are never
    /// retried.
    fn default() -> Self {
        Self {
            retry_mode: RetryMode::exponential(3),
            ..Self::minimal()
        }
    }
}

impl TaskConfig {
    /// The default configuration (see [`TaskConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// One attempt, no retry, no timeout: for tasks that must not run twice.
    pub fn minimal() -> Self {
        Self {
            retry_mode: RetryMode::None,
            attempt_timeout: None,
            circuit_breaker: None,
            rate_limiter: None,
            max_throttle_wait: None,
        }
    }

    /// Retries up to `retries` times, `delay` apart.
    pub fn with_fixed_retry(mut self, retries: usize, delay: Duration) -> Self {
        self.retry_mode = RetryMode::fixed(retries, delay);
        self
    }

    /// Retries up to `max_retries` times with the default exponential backoff.
    pub fn with_exponential_retry(mut self, max_retries: usize) -> Self {
        self.retry_mode = RetryMode::exponential(max_retries);
        self
    }

    /// Uses `mode` for retries.
    pub fn with_retry(mut self, mode: RetryMode) -> Self {
        self.retry_mode = mode;
        self
    }

    /// Fails any attempt that runs longer than `timeout` with [`CanoError::Timeout`]
    /// (retried like any other failure).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Guards every attempt with `breaker` (shared with any other task, workflow or
    /// thread that calls the same dependency). An open breaker fails the attempt with
    /// [`CanoError::CircuitOpen`] before the task body runs, and the retry loop stops
    /// there instead of spending retries. Which errors count against the breaker is
    /// its policy's classifier; an attempt timeout counts as a failure. An attempt the
    /// engine abandons (its run cancelled or past the workflow timeout, a split that no
    /// longer needs the branch) hands its permit back without a verdict, so cancelling
    /// runs or hedging with `JoinStrategy::Any` never trips a breaker.
    pub fn with_circuit_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Paces every attempt with `limiter`: an attempt waits (first come, first served)
    /// until the limiter admits it. Bound the wait with
    /// [`with_max_throttle_wait`](Self::with_max_throttle_wait).
    pub fn with_rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// An attempt that the rate limiter would make wait longer than `max` fails with
    /// [`CanoError::RateLimited`] instead (retried like any other failure). `Duration::ZERO`
    /// never waits.
    pub fn with_max_throttle_wait(mut self, max: Duration) -> Self {
        self.max_throttle_wait = Some(max);
        self
    }

    /// The circuit breaker guarding each attempt, if any.
    pub fn circuit_breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.circuit_breaker.as_ref()
    }

    /// The rate limiter pacing each attempt, if any.
    pub fn rate_limiter(&self) -> Option<&Arc<RateLimiter>> {
        self.rate_limiter.as_ref()
    }

    /// The longest an attempt waits for the rate limiter (`None`: as long as needed).
    pub fn max_throttle_wait(&self) -> Option<Duration> {
        self.max_throttle_wait
    }

    /// Whether anything must admit an attempt before it runs.
    #[inline]
    pub(crate) fn is_guarded(&self) -> bool {
        self.circuit_breaker.is_some() || self.rate_limiter.is_some()
    }

    /// Whether an attempt is just the task's future: no breaker or limiter to ask, no
    /// timeout to race. The engine runs such a task's first attempt inline.
    pub(crate) fn is_plain(&self) -> bool {
        !self.is_guarded() && self.attempt_timeout.is_none()
    }

    /// The retry mode.
    pub fn retry_mode(&self) -> &RetryMode {
        &self.retry_mode
    }

    /// The per-attempt timeout, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The equivalent `cano-retry` policy.
    pub fn retry_policy(&self) -> Retry {
        Retry::new(self.retry_mode).with_attempt_timeout(self.attempt_timeout)
    }
}

/// The code run when the workflow enters a state.
///
/// `S` is the workflow's state type, `K` its resource key type (strings by default).
/// Implement `run` or `run_bare` with `#[task]` on the impl block:
///
/// ```
/// use cano_core::{CanoError, Resources, Task, TaskResult};
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum Step { Work, Done }
///
/// struct Work;
///
/// #[async_trait::async_trait] // what `#[cano::task]` expands to
/// impl Task<Step> for Work {
///     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
///         Ok(TaskResult::Single(Step::Done))
///     }
/// }
/// ```
///
/// The method signatures are those `async_trait` produces, so the default `run` hands
/// back `run_bare`'s future as it is: a transition costs one boxed future either way.
pub trait Task<S, K = DefaultKey>: Send + Sync {
    /// Runs the task with the workflow's resources and returns the next state.
    ///
    /// Defaults to [`run_bare`](Self::run_bare).
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        res: &'life1 Resources<K>,
    ) -> TaskFuture<'async_trait, S>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let _ = res;
        self.run_bare()
    }

    /// Runs a task that needs no resources. Implement this or [`run`](Self::run).
    fn run_bare<'life0, 'async_trait>(&'life0 self) -> TaskFuture<'async_trait, S>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let name = self.name();
        Box::pin(async move {
            Err(CanoError::configuration(format!(
                "task `{name}` implements neither `run` nor `run_bare`"
            ))
            .with_hint("implement one of them inside the `#[task]` impl block"))
        })
    }

    /// How the engine retries and bounds this task. Read once, at registration.
    fn config(&self) -> TaskConfig {
        TaskConfig::default()
    }

    /// The name used in errors and observer events: the type's name by default.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }
}

/// A task of any type behind a pointer (cano 0.13's name): `Task` is object safe.
pub type DynTask<S, K = DefaultKey> = dyn Task<S, K> + Send + Sync;

/// A shared task of any type (cano 0.13's name), for collections of different task
/// types. (It is not itself a `Task`: register each concrete task, or call the object
/// from a task of your own.)
///
/// ```
/// use std::sync::Arc;
/// use cano_core::{CanoError, Task, TaskObject, TaskResult};
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum Step { Fetch, Done }
/// struct Fetch;
/// #[async_trait::async_trait]
/// impl Task<Step> for Fetch {
///     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
///         Ok(TaskResult::Single(Step::Done))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), CanoError> {
/// let tasks: Vec<TaskObject<Step>> = vec![Arc::new(Fetch)];
/// assert_eq!(tasks[0].name(), "Fetch");
/// assert!(matches!(tasks[0].run_bare().await?, TaskResult::Single(Step::Done)));
/// # Ok(())
/// # }
/// ```
pub type TaskObject<S, K = DefaultKey> = Arc<DynTask<S, K>>;

/// A task together with what the engine reads from it once: its [`TaskConfig`] and its
/// name. Handlers outside this crate (split branches, compensatable steps) hold tasks
/// this way and run them with [`TaskEnv::run_registered`](crate::TaskEnv::run_registered), so every task is
/// retried, bounded and named the same way wherever it is registered.
pub struct RegisteredTask<S, K = DefaultKey> {
    // One allocation holds the config, the name and the task itself: a workflow
    // allocates once per registered task, and a transition reaches the task through
    // one pointer.
    entry: Arc<dyn Held<S, K>>,
}

/// A task with what was read from it at registration. The methods are few and the
/// engine calls `run` per transition; `config` and `name` are read off the hot path or
/// when telling observers.
trait Held<S, K>: Send + Sync {
    fn task(&self) -> &dyn Task<S, K>;
    fn run<'a>(&'a self, resources: &'a Resources<K>) -> TaskFuture<'a, S>;
    fn config(&self) -> &TaskConfig;
    fn name(&self) -> &Cow<'static, str>;
}

/// A task, as an entry holds it, with its config and name.
struct Entry<T> {
    config: TaskConfig,
    name: Cow<'static, str>,
    task: T,
}

/// How an entry reaches its task: held by value ([`ByValue`]), or behind the `Arc` it
/// was handed over in. (Not `Task` on the `Arc`: that would overlap the blanket
/// implementation for nodes.)
trait Reach<S, K>: Send + Sync {
    fn task(&self) -> &dyn Task<S, K>;
    fn run<'a>(&'a self, resources: &'a Resources<K>) -> TaskFuture<'a, S>;
}

/// A task registered by value.
struct ByValue<T>(T);

impl<S, K, T: Task<S, K>> Reach<S, K> for ByValue<T> {
    fn task(&self) -> &dyn Task<S, K> {
        &self.0
    }
    #[inline]
    fn run<'a>(&'a self, resources: &'a Resources<K>) -> TaskFuture<'a, S> {
        self.0.run(resources)
    }
}

impl<S, K> Reach<S, K> for Arc<dyn Task<S, K>> {
    fn task(&self) -> &dyn Task<S, K> {
        &**self
    }
    fn run<'a>(&'a self, resources: &'a Resources<K>) -> TaskFuture<'a, S> {
        (**self).run(resources)
    }
}

impl<S, K, T: Reach<S, K>> Held<S, K> for Entry<T> {
    fn task(&self) -> &dyn Task<S, K> {
        self.task.task()
    }
    #[inline]
    fn run<'a>(&'a self, resources: &'a Resources<K>) -> TaskFuture<'a, S> {
        self.task.run(resources)
    }
    fn config(&self) -> &TaskConfig {
        &self.config
    }
    fn name(&self) -> &Cow<'static, str> {
        &self.name
    }
}

impl<S, K> RegisteredTask<S, K> {
    /// Reads `task`'s config and name and keeps them beside it.
    pub fn new<T: Task<S, K> + 'static>(task: T) -> Self {
        let (config, name) = (task.config(), task.name());
        Self {
            entry: Arc::new(Entry {
                config,
                name,
                task: ByValue(task),
            }),
        }
    }

    /// Like [`new`](Self::new), for a task that is already shared.
    pub fn from_arc(task: Arc<dyn Task<S, K>>) -> Self
    where
        S: 'static,
        K: 'static,
    {
        let (config, name) = (task.config(), task.name());
        Self {
            entry: Arc::new(Entry { config, name, task }),
        }
    }

    /// The task.
    pub fn task(&self) -> &dyn Task<S, K> {
        self.entry.task()
    }

    /// Starts one attempt of the task: its future, as [`Task::run`] returns it.
    #[inline]
    pub fn run<'a>(&'a self, resources: &'a Resources<K>) -> TaskFuture<'a, S> {
        self.entry.run(resources)
    }

    /// The config read at registration.
    pub fn config(&self) -> &TaskConfig {
        self.entry.config()
    }

    /// The name read at registration.
    pub fn name(&self) -> &Cow<'static, str> {
        self.entry.name()
    }
}

impl<S, K> Clone for RegisteredTask<S, K> {
    fn clone(&self) -> Self {
        Self {
            entry: self.entry.clone(),
        }
    }
}

impl<S, K> std::fmt::Debug for RegisteredTask<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredTask")
            .field("name", self.name())
            .field("config", self.config())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Step(u8);

    /// Names the state it was built with; bounded by a timeout, so its config is not
    /// the default one.
    struct Named(u8);

    #[async_trait::async_trait]
    impl Task<Step> for Named {
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal().with_attempt_timeout(Duration::from_secs(7))
        }

        fn name(&self) -> Cow<'static, str> {
            format!("named-{}", self.0).into()
        }

        async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
            Ok(TaskResult::Single(Step(self.0)))
        }
    }

    async fn next_of(entry: &RegisteredTask<Step>) -> Step {
        match entry.run(&Resources::empty()).await {
            Ok(TaskResult::Single(next)) => next,
            other => panic!("expected a single next state, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_task_registered_by_value_keeps_its_name_config_and_behaviour() {
        let entry = RegisteredTask::new(Named(3));
        assert_eq!(entry.name(), "named-3");
        assert_eq!(
            entry.config().attempt_timeout(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(next_of(&entry).await, Step(3));
        // Through the task itself too, as handlers outside the crate reach it.
        let through_task = entry.task().run_bare().await.unwrap();
        assert!(matches!(through_task, TaskResult::Single(Step(3))));
        // A clone is the same entry, not a copy of the task.
        let copy = entry.clone();
        assert!(std::ptr::addr_eq(copy.task(), entry.task()));
    }

    #[tokio::test]
    async fn a_shared_task_is_kept_shared_not_copied() {
        let shared: Arc<dyn Task<Step>> = Arc::new(Named(9));
        let entry = RegisteredTask::from_arc(shared.clone());
        assert_eq!(Arc::strong_count(&shared), 2);
        assert!(std::ptr::addr_eq(entry.task(), &*shared));
        assert_eq!(entry.name(), "named-9");
        assert_eq!(
            entry.config().attempt_timeout(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(next_of(&entry).await, Step(9));
        drop(entry);
        assert_eq!(Arc::strong_count(&shared), 1);
    }
}
