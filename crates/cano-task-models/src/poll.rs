//! Poll tasks: ask "is it ready yet?" until it is, waiting between asks.
//!
//! A [`PollTask`] checks something it does not control (an export job, a payment
//! settlement, a DNS record) and answers [`PollOutcome::Ready`] with the next state,
//! or [`PollOutcome::Pending`] with how long to wait before asking again. The engine
//! owns the loop; errors follow the task's [`PollErrorPolicy`], and
//! [`max_wait`](PollTask::max_wait) bounds the whole wait.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use cano_core::{CanoError, DefaultKey, Resources, TaskConfig, TaskResult, short_type_name};
use tokio::time::Instant;

use crate::util::caught;

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome<S> {
    /// Done: move on as this result says.
    Ready(TaskResult<S>),
    /// Not yet: poll again after `delay_ms` milliseconds (0: at once, after yielding
    /// to other tasks).
    Pending {
        /// Milliseconds to wait before the next poll.
        delay_ms: u64,
    },
}

impl<S> PollOutcome<S> {
    /// Ready: move to `state`.
    pub fn ready(state: S) -> Self {
        Self::Ready(TaskResult::Single(state))
    }

    /// Not ready: poll again after `delay` (whole milliseconds; longer than `u64::MAX`
    /// ms is taken as `u64::MAX`).
    pub fn pending(delay: Duration) -> Self {
        Self::Pending {
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// What a failed poll does to the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollErrorPolicy {
    /// The first error fails the task (the default).
    #[default]
    FailFast,
    /// Errors are tolerated up to `max_errors` in all, each followed by a pause of
    /// `delay` before the next poll; one more fails the task. Errors marked permanent
    /// ([`CanoError::is_permanent`]) still fail at once. A zero `delay` is refused (it
    /// would poll a failing dependency in a tight loop).
    Retry {
        /// How many errors the whole wait may see.
        max_errors: u32,
        /// The pause after each.
        delay: Duration,
    },
    /// cano 0.13's policy: up to `max_errors` errors *in a row* are tolerated, each
    /// followed at once by the next poll (a `Pending` answer resets the count); one more
    /// fails the task with that error itself. Errors marked permanent still fail at once.
    RetryOnError {
        /// Errors in a row the loop survives.
        max_errors: u32,
    },
}

/// Polls until ready. Write `#[task::poll]` on the impl block (through the `cano`
/// facade): it lets the block use `async fn` and makes the type a
/// [`Task`](cano_core::Task), registered with `Workflow::register` like any other.
///
/// The whole loop is one attempt of that task: its [`config`](Self::config) defaults
/// to no retries, and an attempt timeout there also bounds the wait.
#[async_trait]
pub trait PollTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// Checks once.
    async fn poll(&self, res: &Resources<K>) -> Result<PollOutcome<S>, CanoError>;

    /// What an error does: fail at once (the default) or tolerate a few.
    fn on_error(&self) -> PollErrorPolicy {
        PollErrorPolicy::FailFast
    }

    /// cano 0.13's name for [`on_error`](Self::on_error), which it calls by default;
    /// the loop asks this one, so overriding either works.
    fn on_poll_error(&self) -> PollErrorPolicy {
        self.on_error()
    }

    /// The longest the task waits for readiness, all polls and pauses included; `None`
    /// (the default) waits as long as it takes. When it runs out, one last poll is made
    /// and, if that is not ready either, the task fails with [`CanoError::Timeout`].
    fn max_wait(&self) -> Option<Duration> {
        None
    }

    /// How the engine runs the whole loop: no retries by default.
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    /// The name used in errors and observer events: the type's name by default.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }
}

/// cano 0.13's name for [`run_poll`].
pub use run_poll as run_poll_loop;

/// A poll task behind a pointer, any type (cano 0.13's name).
pub type DynPollTask<S, K = DefaultKey> = dyn PollTask<S, K> + Send + Sync;

/// A shared poll task of any type (cano 0.13's name).
pub type PollTaskObject<S, K = DefaultKey> = std::sync::Arc<DynPollTask<S, K>>;

/// Runs `task`'s poll loop to its result: what the `Task` impl that `#[task::poll]`
/// writes calls.
pub async fn run_poll<T, S, K>(task: &T, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>
where
    T: PollTask<S, K> + ?Sized,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    let started = Instant::now();
    // A maximum wait past what the clock can name (`Duration::MAX`) is no limit.
    let deadline = task.max_wait().and_then(|max| started.checked_add(max));
    let policy = task.on_poll_error();
    let (mut polls, mut errors, mut in_a_row) = (0u64, 0u32, 0u32);
    loop {
        polls += 1;
        let delay = match caught(task.poll(res)).await {
            Ok(PollOutcome::Ready(result)) => return Ok(result),
            Ok(PollOutcome::Pending { delay_ms }) => {
                in_a_row = 0;
                Duration::from_millis(delay_ms)
            }
            Err(error) => match policy {
                PollErrorPolicy::FailFast => return Err(error),
                _ if error.is_permanent() => return Err(error),
                PollErrorPolicy::RetryOnError { max_errors } => {
                    in_a_row = in_a_row.saturating_add(1);
                    if in_a_row > max_errors {
                        return Err(error);
                    }
                    Duration::ZERO
                }
                PollErrorPolicy::Retry { max_errors, delay } => {
                    errors += 1;
                    if delay.is_zero() {
                        return Err(CanoError::configuration(format!(
                            "poll task `{}` retries errors with no pause, which would poll in a tight loop",
                            task.name()
                        ))
                        .with_hint("give PollErrorPolicy::Retry a non-zero delay")
                        .with_source(error));
                    }
                    if errors > max_errors {
                        return Err(CanoError::retry_exhausted(format!(
                            "poll task `{}` failed {errors} times, more than its budget of {max_errors}; last error: {error}",
                            task.name()
                        ))
                        .with_hint("fix the dependency, or raise PollErrorPolicy::Retry's max_errors")
                        .with_source(error));
                    }
                    delay
                }
            },
        };
        match deadline {
            Some(deadline) if Instant::now() >= deadline => {
                let waited = task.max_wait().unwrap_or_default();
                return Err(CanoError::timeout(format!(
                    "poll task `{}` was not ready within its maximum wait of {waited:?} ({polls} polls)",
                    task.name()
                ))
                .with_hint("raise PollTask::max_wait, or check why the awaited condition never holds"));
            }
            // The last pause is cut short so the final poll happens at the deadline.
            Some(deadline) => {
                let pause_ends = Instant::now().checked_add(delay).unwrap_or(deadline);
                tokio::time::sleep_until(deadline.min(pause_ends)).await;
            }
            None if delay.is_zero() => tokio::task::consume_budget().await,
            None => tokio::time::sleep(delay).await,
        }
    }
}
