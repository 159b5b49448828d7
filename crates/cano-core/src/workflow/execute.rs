//! Running one task: attempts under the task's retry policy and timeout, panics caught,
//! observers told. Shared by the engine and by handlers from other crates.

// Futures that are part of every run are written as `fn -> impl Future` returning an
// `async move` block: an `async fn` keeps its arguments twice in its state
// (rust-lang/rust#62958), which would grow every run and every split branch.
#![allow(clippy::manual_async_fn)]

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;

use cano_retry::{AttemptError, ErrorClass, Retry, RetryError, RetryEvent};
use futures::FutureExt;
use std::future::Future;
use std::pin::Pin;

use crate::error::CanoError;
use crate::observer::Observers;
use crate::resource::Resources;
use crate::run::RunContext;
use crate::spans;
use crate::task::{Task, TaskConfig, TaskResult};

use super::admission::{Site, guarded_attempt};
use super::attempt::{caught, timeout_error};

/// A first attempt under an attempt timeout, in one box with its timer, so that the
/// many tasks without a timeout do not carry a timer in every run's future.
fn timed_first_attempt<'a, S: 'a, K>(
    task: &'a dyn Task<S, K>,
    name: &'a str,
    config: &'a TaskConfig,
    resources: &'a Resources<K>,
) -> Pin<Box<impl Future<Output = Result<TaskResult<S>, AttemptError<CanoError>>> + 'a>> {
    Box::pin(async move {
        let attempt = spans::attempt(task.run(resources), name, 1);
        config.retry_policy().attempt(caught(attempt)).await
    })
}

/// What running a task needs to know about it: the task, its name and its config.
pub(crate) trait TaskParts<S, K> {
    fn task(&self) -> &dyn Task<S, K>;
    fn name(&self) -> &str;
    fn config(&self) -> &TaskConfig;
}

impl<S, K> TaskParts<S, K> for crate::task::RegisteredTask<S, K> {
    fn task(&self) -> &dyn Task<S, K> {
        self.task()
    }
    fn name(&self) -> &str {
        self.name()
    }
    fn config(&self) -> &TaskConfig {
        self.config()
    }
}

/// A task handed over with its config, not registered (`TaskEnv::run_task`).
pub(crate) struct LooseTask<'a, S, K> {
    pub(crate) task: &'a dyn Task<S, K>,
    pub(crate) name: std::borrow::Cow<'static, str>,
    pub(crate) config: &'a TaskConfig,
}

impl<S, K> TaskParts<S, K> for LooseTask<'_, S, K> {
    fn task(&self) -> &dyn Task<S, K> {
        self.task
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> &TaskConfig {
        self.config
    }
}

/// What a task runs among: the workflow's resources, the run, and the observers to
/// tell. Passed as one value so a task's future keeps one or two pointers to them, not
/// three (a split branch keeps a pointer to its `TaskEnv`).
pub(crate) trait Surroundings<'a, K>: Copy + 'a {
    fn resources(self) -> &'a Resources<K>;
    fn run(self) -> &'a RunContext;
    fn observers(self) -> &'a Observers;
}

/// The engine's surroundings: its workflow's spec (resources and observers) and the run.
pub(crate) struct InRun<'a, S, K> {
    pub(crate) spec: &'a super::Spec<S, K>,
    pub(crate) run: &'a RunContext,
}

// Written out: a derive would ask `S` and `K` to be `Copy` too.
impl<S, K> Clone for InRun<'_, S, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, K> Copy for InRun<'_, S, K> {}

impl<'a, S: 'a, K: 'a> Surroundings<'a, K> for InRun<'a, S, K> {
    fn resources(self) -> &'a Resources<K> {
        &self.spec.resources
    }
    fn run(self) -> &'a RunContext {
        self.run
    }
    fn observers(self) -> &'a Observers {
        &self.spec.observers
    }
}

pub(crate) fn execute_task<'a, S, K: 'a, T: TaskParts<S, K> + ?Sized, E: Surroundings<'a, K>>(
    entry: &'a T,
    state: &'a S,
    around: E,
) -> impl Future<Output = Result<TaskResult<S>, CanoError>> + 'a
where
    S: Debug,
{
    async move {
        // `around` is asked again at each use: locals holding what it gives would be
        // kept across the awaits, a pointer each, in every task's future.
        if !around.observers().is_empty() {
            let run_id = around.run().run_id();
            around
                .observers()
                .each(|o| o.task_started(run_id, state, entry.name(), 1));
        }
        // The first attempt is awaited right here, not through combinators, so the
        // common case (no timeout, success) compiles into the caller's poll; the retry
        // loop, with its timers and closures, is built (and boxed) only once an attempt
        // has failed. That keeps the run's future small and a successful transition
        // free of extra work.
        // No config local is held across the awaits: it would ride in every future.
        // The retries' future is made inside this block, so the failed first attempt
        // is moved into it and its slot is dead before the await: it is not kept in
        // every task's future.
        let retries = {
            let first = match entry.config().attempt_timeout() {
                _ if entry.config().is_guarded() => {
                    let site = Site {
                        state,
                        task: entry.name(),
                        run: around.run(),
                        observers: around.observers(),
                    };
                    let resources = around.resources();
                    let attempt = guarded_attempt(entry.task(), entry.config(), resources, site);
                    spans::first_boxed_attempt(attempt, entry.name(), around.run())
                        .await
                        .map_err(AttemptError::Failed)
                }
                None => {
                    let task = entry.task().run(around.resources());
                    let attempt = spans::first_attempt(task, entry.name(), around.run());
                    match AssertUnwindSafe(attempt).catch_unwind().await {
                        Ok(result) => result.map_err(AttemptError::Failed),
                        Err(panic) => Err(AttemptError::Failed(CanoError::from_panic(panic))),
                    }
                }
                Some(_) => {
                    let (task, name, config) = (entry.task(), entry.name(), entry.config());
                    timed_first_attempt(task, name, config, around.resources()).await
                }
            };
            match first {
                // Told here, not through `report`: moving the result in and out of it
                // costs more than a trivial task (a split pays it on every branch).
                Ok(result) => {
                    tell_success(around.observers(), around.run(), state, entry.name());
                    return Ok(result);
                }
                Err(first) => {
                    let (task, name, config) = (entry.task(), entry.name(), entry.config());
                    let (resources, run, observers) =
                        (around.resources(), around.run(), around.observers());
                    retry_after(first, task, name, config, state, resources, run, observers)
                }
            }
        };
        report(
            retries.await,
            entry,
            state,
            around.run(),
            around.observers(),
        )
    }
}

/// A plain task's first attempt, as the engine awaits it inline (see [`PlainAttempt`]).
pub(crate) enum FirstAttempt<S> {
    /// The task named the next state.
    Next(S),
    /// Anything else: a split, or an error.
    Other(Result<TaskResult<S>, CanoError>),
}

/// Awaits a task's future and sorts its result at once, field by field. Awaiting the
/// task's future directly moves its whole result into the run's future before the
/// task's box is freed, and that wide copy of what the task wrote in narrow pieces
/// stalls the processor on every transition.
pub(crate) struct PlainAttempt<'a, S>(pub(crate) crate::task::TaskFuture<'a, S>);

impl<S> Future for PlainAttempt<'_, S> {
    type Output = FirstAttempt<S>;

    #[inline]
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<FirstAttempt<S>> {
        use std::task::Poll;
        match self.0.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(TaskResult::Single(next))) => Poll::Ready(FirstAttempt::Next(next)),
            Poll::Ready(Ok(TaskResult::Split(states))) => {
                Poll::Ready(FirstAttempt::Other(Ok(TaskResult::Split(states))))
            }
            Poll::Ready(Err(error)) => Poll::Ready(FirstAttempt::Other(Err(error))),
        }
    }
}

/// What follows a first attempt that did not simply name the next state, for a caller
/// that ran that attempt itself (the engine's inline path for plain tasks): the retries
/// the task's config allows after a failure, then the outcome told to the observers
/// and, for a failure, an error naming the state and the task.
pub(crate) fn after_first_attempt<'a, S: Debug, K, T: TaskParts<S, K> + ?Sized>(
    first: Result<TaskResult<S>, CanoError>,
    entry: &'a T,
    state: &'a S,
    resources: &'a Resources<K>,
    run: &'a RunContext,
    observers: &'a Observers,
) -> impl Future<Output = Result<TaskResult<S>, CanoError>> + 'a {
    async move {
        let outcome = match first {
            Ok(result) => Ok(result),
            Err(first) => {
                let (task, name, config) = (entry.task(), entry.name(), entry.config());
                let first = AttemptError::Failed(first);
                retry_after(first, task, name, config, state, resources, run, observers).await
            }
        };
        report(outcome, entry, state, run, observers)
    }
}

/// Tells the observers that task `name` succeeded in `state`.
#[inline]
fn tell_success<S: Debug>(observers: &Observers, run: &RunContext, state: &S, name: &str) {
    if !observers.is_empty() {
        observers.each(|o| o.task_succeeded(run.run_id(), state, name));
    }
}

/// Tells the observers how a task's attempts ended and turns a failure into the error
/// naming the state and the task.
fn report<S: Debug, K, T: TaskParts<S, K> + ?Sized>(
    outcome: Result<TaskResult<S>, RetryError<CanoError>>,
    entry: &T,
    state: &S,
    run: &RunContext,
    observers: &Observers,
) -> Result<TaskResult<S>, CanoError> {
    let name = entry.name();
    match outcome {
        Ok(result) => {
            tell_success(observers, run, state, name);
            Ok(result)
        }
        Err(failure) => {
            let error = final_error(failure, entry.config(), state, name);
            if !observers.is_empty() {
                observers.each(|o| o.task_failed(run.run_id(), state, name, &error));
            }
            Err(error)
        }
    }
}

/// The retries after a failed first attempt, in one box: the policy, its timers and
/// the closures live there, not in the state of every run's future.
#[allow(clippy::too_many_arguments)]
fn retry_after<'a, S: Debug, K>(
    first: AttemptError<CanoError>,
    task: &'a dyn Task<S, K>,
    name: &'a str,
    config: &'a TaskConfig,
    state: &'a S,
    resources: &'a Resources<K>,
    run: &'a RunContext,
    observers: &'a Observers,
) -> Pin<Box<impl Future<Output = Result<TaskResult<S>, RetryError<CanoError>>> + 'a>> {
    Box::pin(async move {
        let mut attempt = 1usize;
        let mut next_attempt = || {
            attempt += 1;
            let n = attempt;
            if !observers.is_empty() {
                observers.each(|o| o.task_started(run.run_id(), state, name, n));
            }
            n
        };
        let classify = |e: &CanoError| {
            if e.is_permanent() {
                ErrorClass::Permanent
            } else {
                ErrorClass::Retryable
            }
        };
        let task_retrying = |event: RetryEvent<'_, CanoError>| {
            if !observers.is_empty() {
                let error = attempt_error(event.error, config, state, name);
                observers.each(|o| {
                    o.task_retrying(
                        run.run_id(),
                        state,
                        name,
                        event.attempt,
                        &error,
                        event.delay,
                    )
                });
            }
        };
        if config.is_guarded() {
            // The guarded attempt applies the attempt timeout itself, after admission.
            let site = Site {
                state,
                task: name,
                run,
                observers,
            };
            Retry::new(*config.retry_mode())
                .continue_after(
                    first,
                    || {
                        let n = next_attempt();
                        spans::attempt(guarded_attempt(task, config, resources, site), name, n)
                    },
                    classify,
                    task_retrying,
                )
                .await
        } else {
            config
                .retry_policy()
                .continue_after(
                    first,
                    || {
                        let n = next_attempt();
                        caught(spans::attempt(task.run(resources), name, n))
                    },
                    classify,
                    task_retrying,
                )
                .await
        }
    })
}

fn attempt_error(
    error: &AttemptError<CanoError>,
    config: &TaskConfig,
    state: &dyn Debug,
    name: &str,
) -> CanoError {
    match error {
        // Observers see a description; the error itself moves on to the final result.
        AttemptError::Failed(e) => CanoError::task_execution(e.to_string()).at(state, name),
        AttemptError::TimedOut(_) => timeout_error(config, state, name),
    }
}

fn final_error(
    failure: RetryError<CanoError>,
    config: &TaskConfig,
    state: &dyn Debug,
    name: &str,
) -> CanoError {
    let failed_attempt = |last| match last {
        AttemptError::Failed(error) => CanoError::at(error, state, name),
        AttemptError::TimedOut(_) => timeout_error(config, state, name),
    };
    match failure {
        RetryError::Permanent { error, .. } => error.at(state, name),
        // Without retries the attempt's own error is the answer.
        RetryError::Exhausted { attempts: 1, last } => failed_attempt(last),
        RetryError::Exhausted { attempts, last } => {
            let last = failed_attempt(last);
            CanoError::retry_exhausted(format!(
                "all {attempts} attempts failed; last error: {last}"
            ))
            .at(state, name)
            .with_hint(
                "fix the failing dependency, or allow more retries with TaskConfig::with_retry",
            )
            .with_source(last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DefaultKey;
    use crate::task::RegisteredTask;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_tasks_future_holds_three_pointers_and_the_awaited_attempt() {
        // The task, its state and its surroundings (one pointer to a split branch's
        // `TaskEnv`), the attempt being awaited (a boxed future) and a tag. A failed
        // first attempt is moved into the retries, not kept beside them. Every split
        // branch carries this future, inside tokio's task cell.
        let size = returned_size(
            execute_task::<
                u32,
                DefaultKey,
                RegisteredTask<u32, DefaultKey>,
                &crate::TaskEnv<DefaultKey>,
            >,
        );
        assert!(
            size <= 48,
            "execute_task's future is {size} bytes; keep it <= 48 (these sizes come from rustc's layout and tokio's task cell: after a toolchain or tokio upgrade moves them, re-measure with `cargo xtask bench` and either win the bytes back or raise the bound here, saying why in the commit)"
        );
    }
}
