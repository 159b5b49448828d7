//! One attempt of a task as the run reports it: a panic caught as an error, a timeout
//! named with its limit, the state and the task. Below both the plain path
//! (`execute`) and the guarded one (`admission`).

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::error::CanoError;
use crate::task::{TaskConfig, TaskResult};

/// A task's future with a panic turned into an error.
pub(crate) fn caught<'a, S: 'a>(
    future: impl Future<Output = Result<TaskResult<S>, CanoError>> + 'a,
) -> impl Future<Output = Result<TaskResult<S>, CanoError>> + 'a {
    AssertUnwindSafe(future)
        .catch_unwind()
        .map(|r| r.unwrap_or_else(|p| Err(CanoError::from_panic(p))))
}

/// The error of an attempt that ran past the config's attempt timeout.
pub(crate) fn timeout_error(config: &TaskConfig, state: &dyn Debug, name: &str) -> CanoError {
    let limit = config.attempt_timeout().unwrap_or_default();
    CanoError::timeout(format!("attempt did not finish within {limit:?}"))
        .at(state, name)
        .with_hint("raise TaskConfig::with_attempt_timeout, make the task faster, or add a RetryMode if the slowness is transient")
}
