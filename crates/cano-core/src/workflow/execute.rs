//! Running one task: attempts under the task's retry policy and timeout, panics caught,
//! observers told. Shared by the engine and by handlers from other crates.

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;

use cano_retry::{AttemptError, ErrorClass, RetryError};
use futures::FutureExt;

use crate::error::CanoError;
use crate::observer::Observers;
use crate::resource::Resources;
use crate::run::RunContext;
use crate::task::{Task, TaskConfig, TaskResult};

/// A task's future with a panic turned into an error.
fn caught<'a, S: 'a>(
    future: crate::task::TaskFuture<'a, S>,
) -> impl std::future::Future<Output = Result<TaskResult<S>, CanoError>> + 'a {
    AssertUnwindSafe(future)
        .catch_unwind()
        .map(|r| r.unwrap_or_else(|p| Err(CanoError::from_panic(p))))
}

async fn first_attempt<S, K>(
    task: &dyn Task<S, K>,
    config: &TaskConfig,
    resources: &Resources<K>,
) -> Result<TaskResult<S>, AttemptError<CanoError>> {
    match config.attempt_timeout() {
        None => caught(task.run(resources))
            .await
            .map_err(AttemptError::Failed),
        // The timer is boxed so that the many tasks without a timeout do not carry its
        // 100-odd bytes in every run's future.
        Some(_) => Box::pin(config.retry_policy().attempt(caught(task.run(resources)))).await,
    }
}

pub(crate) async fn execute_task<S, K>(
    task: &dyn Task<S, K>,
    name: &str,
    config: &TaskConfig,
    state: &S,
    resources: &Resources<K>,
    run: &RunContext,
    observers: &Observers,
) -> Result<TaskResult<S>, CanoError>
where
    S: Debug,
{
    if !observers.is_empty() {
        observers.each(|o| o.on_task_start(run.run_id(), state, name, 1));
    }
    // The first attempt runs inline; the retry loop, with its timers and closures, is
    // built (and boxed) only once an attempt has failed. That keeps the run's future
    // small and the successful transition free of extra work.
    let outcome = match first_attempt(task, config, resources).await {
        Ok(result) => Ok(result),
        Err(first) => {
            let mut attempt = 1usize;
            Box::pin(config.retry_policy().continue_after(
                first,
                || {
                    attempt += 1;
                    if !observers.is_empty() {
                        let n = attempt;
                        observers.each(|o| o.on_task_start(run.run_id(), state, name, n));
                    }
                    caught(task.run(resources))
                },
                |e: &CanoError| {
                    if e.is_permanent() {
                        ErrorClass::Permanent
                    } else {
                        ErrorClass::Retryable
                    }
                },
                |event| {
                    if !observers.is_empty() {
                        let error = attempt_error(event.error, config, state, name);
                        observers.each(|o| {
                            o.on_retry(
                                run.run_id(),
                                state,
                                name,
                                event.attempt,
                                &error,
                                event.delay,
                            )
                        });
                    }
                },
            ))
            .await
        }
    };
    match outcome {
        Ok(result) => {
            if !observers.is_empty() {
                observers.each(|o| o.on_task_success(run.run_id(), state, name));
            }
            Ok(result)
        }
        Err(failure) => {
            let error = final_error(failure, config, state, name);
            if !observers.is_empty() {
                observers.each(|o| o.on_task_failure(run.run_id(), state, name, &error));
            }
            Err(error)
        }
    }
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

fn timeout_error(config: &TaskConfig, state: &dyn Debug, name: &str) -> CanoError {
    let limit = config.attempt_timeout().unwrap_or_default();
    CanoError::timeout(format!("attempt did not finish within {limit:?}"))
        .at(state, name)
        .with_hint("raise TaskConfig::with_attempt_timeout, make the task faster, or add a RetryMode if the slowness is transient")
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
