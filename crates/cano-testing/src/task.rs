//! [`FlakyTask`]: a task that fails or panics on the attempts you choose.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cano_core::{CanoError, Node, Resources, TaskConfig};

/// Moves to a fixed state, except on the attempts (counted from 1, over every run it
/// serves) where it is told to fail or panic. Clones share the attempt count, so keep
/// one to read [`attempts`](Self::attempts) after registering the other.
///
/// ```
/// use cano_core::{TaskConfig, Workflow};
/// use cano_testing::FlakyTask;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum S { Call, Done }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let flaky = FlakyTask::new(S::Done)
///     .failing_on([1, 2])
///     .with_config(TaskConfig::new().with_exponential_retry(3));
/// let workflow = Workflow::bare()
///     .register(S::Call, flaky.clone())
///     .add_exit_state(S::Done);
/// assert_eq!(workflow.orchestrate(S::Call).await.unwrap(), S::Done);
/// assert_eq!(flaky.attempts(), 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FlakyTask<S> {
    next: S,
    fail_on: Vec<usize>,
    panic_on: Vec<usize>,
    config: TaskConfig,
    name: Cow<'static, str>,
    attempts: Arc<AtomicUsize>,
}

impl<S> FlakyTask<S> {
    /// A task that moves to `next` on every attempt, with no retries configured.
    pub fn new(next: S) -> Self {
        Self {
            next,
            fail_on: Vec::new(),
            panic_on: Vec::new(),
            config: TaskConfig::minimal(),
            name: Cow::Borrowed("FlakyTask"),
            attempts: Arc::default(),
        }
    }

    /// Fails (with [`CanoError::TaskExecution`]) on these attempts.
    pub fn failing_on(mut self, attempts: impl IntoIterator<Item = usize>) -> Self {
        self.fail_on.extend(attempts);
        self
    }

    /// Panics on these attempts.
    pub fn panicking_on(mut self, attempts: impl IntoIterator<Item = usize>) -> Self {
        self.panic_on.extend(attempts);
        self
    }

    /// Runs under `config` (retries, timeouts); one attempt by default.
    pub fn with_config(mut self, config: TaskConfig) -> Self {
        self.config = config;
        self
    }

    /// Names the task in errors and events.
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// How many attempts started so far.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

// A node, not a task: `Task` has a blanket impl for every `Node`, which would clash
// with a direct impl for a generic type. `prep` is the attempt.
#[async_trait::async_trait]
impl<S, K> Node<S, K> for FlakyTask<S>
where
    S: Clone + Send + Sync + 'static,
    K: Send + Sync + 'static,
{
    type PrepResult = S;
    type ExecResult = S;

    async fn prep(&self, _res: &Resources<K>) -> Result<S, CanoError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.panic_on.contains(&attempt) {
            panic!("{}: injected panic on attempt {attempt}", self.name);
        }
        if self.fail_on.contains(&attempt) {
            return Err(CanoError::task_execution(format!(
                "{}: injected failure on attempt {attempt}",
                self.name
            )));
        }
        Ok(self.next.clone())
    }

    async fn exec(&self, next: S) -> S {
        next
    }

    async fn post(&self, _res: &Resources<K>, next: S) -> Result<S, CanoError> {
        Ok(next)
    }

    fn config(&self) -> TaskConfig {
        self.config.clone()
    }

    fn name(&self) -> Cow<'static, str> {
        self.name.clone()
    }
}
