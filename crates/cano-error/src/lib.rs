//! Errors: one enum, [`CanoError`], whose every variant carries an [`ErrorDetail`] that
//! says what failed, in which state and task, and how to fix it.
//!
//! A user's own error is never flattened into a string: [`CanoError::task`] keeps it as
//! the error's `source()`, so it can be downcast with [`CanoError::downcast_ref`].
//!
//! ```
//! use cano_error::CanoError;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("card declined")]
//! struct Declined;
//!
//! let err = CanoError::task(Declined).with_hint("ask the customer for another card");
//! assert!(err.downcast_ref::<Declined>().is_some());
//! assert!(err.to_string().contains("card declined"));
//! ```

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A boxed error from user code, kept with its type.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Shorthand for `Result<T, CanoError>`.
pub type CanoResult<T> = Result<T, CanoError>;

/// Everything that can go wrong in cano.
///
/// Match on the variant to decide what to do; print it to learn what happened, where,
/// and how to fix it. New variants may be added, so matches need a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanoError {
    /// The run could not go on: no handler for the state reached, a single-task state
    /// returned `Split`, or the workflow timeout elapsed.
    #[error(transparent)]
    Workflow(ErrorDetail),
    /// The workflow or a resource is set up wrongly: no exit state, a duplicate
    /// registration, a missing resource key, a resource of another type.
    #[error(transparent)]
    Configuration(ErrorDetail),
    /// One attempt of a task ran past its `attempt_timeout`.
    #[error(transparent)]
    Timeout(ErrorDetail),
    /// Every attempt the task's retry mode allows has failed; the last error is the
    /// `source()`.
    #[error(transparent)]
    RetryExhausted(ErrorDetail),
    /// A circuit breaker refused the call before the task ran.
    #[error(transparent)]
    CircuitOpen(ErrorDetail),
    /// A rate limiter refused the call and waiting was not allowed (or the wait would
    /// have been too long); `retry_after` says when the call could go ahead (it
    /// dereferences to a `Duration` and compares with one).
    #[error("{}", retry_after.0)]
    RateLimited {
        /// How long until the limiter could admit the call, with the error's detail.
        retry_after: RetryAfter,
    },
    /// A task failed (returned an error or panicked).
    #[error(transparent)]
    TaskExecution(ErrorDetail),
    /// A store operation failed: a missing key, a value of another type.
    #[error(transparent)]
    Store(ErrorDetail),
    /// A resource failed to set up or tear down.
    #[error(transparent)]
    Resource(ErrorDetail),
    /// The run was cancelled through its cancellation token or handle.
    #[error(transparent)]
    Cancelled(ErrorDetail),
    /// A checkpointed run was written by another version of the workflow than the one
    /// asked to resume it (see `Workflow::with_workflow_version`).
    #[error(transparent)]
    WorkflowVersionMismatch(ErrorDetail),
    /// A run failed and rolling it back failed too: one or more compensations of its
    /// completed steps did not succeed. [`CompensationFailure::original`] is the error
    /// the run failed with, [`CompensationFailure::errors`] every compensation error.
    #[error("{}", failure.0)]
    CompensationFailed {
        /// The original error and the compensation errors, with the error's detail.
        failure: CompensationFailure,
    },
}

/// The payload of every [`CanoError`]: the message, where it happened, how to fix it,
/// and the underlying error.
///
/// It is boxed so that `Result<S, CanoError>` stays two words wide on the hot path.
pub struct ErrorDetail(Box<Inner>);

struct Inner {
    message: Cow<'static, str>,
    state: Option<String>,
    task: Option<Cow<'static, str>>,
    hint: Option<Cow<'static, str>>,
    source: Option<BoxError>,
    permanent: bool,
    /// Only meaningful for [`CanoError::RateLimited`].
    retry_after: Duration,
    /// Only present for [`CanoError::CompensationFailed`].
    rollback: Option<Box<Rollback>>,
}

/// What a failed rollback leaves: the run's own error and each compensation's.
struct Rollback {
    original: CanoError,
    errors: Vec<CanoError>,
}

impl ErrorDetail {
    /// A detail with just a message.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(Inner {
            message: message.into(),
            state: None,
            task: None,
            hint: None,
            source: None,
            permanent: false,
            retry_after: Duration::ZERO,
            rollback: None,
        }))
    }

    /// What happened.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The state the workflow was in (its `Debug` text), if known.
    pub fn state(&self) -> Option<&str> {
        self.0.state.as_deref()
    }

    /// The task that was running, if known.
    pub fn task(&self) -> Option<&str> {
        self.0.task.as_deref()
    }

    /// How to fix it, if known.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.0.permanent
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        match (&inner.task, &inner.state) {
            (Some(task), Some(state)) => write!(f, "task `{task}` in state {state}: ")?,
            (Some(task), None) => write!(f, "task `{task}`: ")?,
            (None, Some(state)) => write!(f, "state {state}: ")?,
            (None, None) => {}
        }
        match (&inner.message, &inner.source) {
            (m, Some(source)) if m.is_empty() => write!(f, "{source}")?,
            (m, _) => f.write_str(m)?,
        }
        if let Some(hint) = &inner.hint {
            write!(f, " (fix: {hint})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        f.debug_struct("ErrorDetail")
            .field("message", &inner.message)
            .field("state", &inner.state)
            .field("task", &inner.task)
            .field("hint", &inner.hint)
            .field("source", &inner.source)
            .field("permanent", &inner.permanent)
            .finish()
    }
}

impl StdError for ErrorDetail {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        // A failed rollback's cause is the run's own error, so `downcast_ref` finds the
        // user's error type through it.
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
            .or_else(|| {
                self.0
                    .rollback
                    .as_ref()
                    .map(|r| &r.original as &(dyn StdError + 'static))
            })
    }
}

/// The payload of [`CanoError::RateLimited`]: how long until the refused call could go
/// ahead, together with the error's detail.
///
/// It dereferences to that [`Duration`] and compares with one, so
/// `CanoError::RateLimited { retry_after, .. }` reads as the delay it names. It is one
/// boxed pointer, not a `Duration` beside the detail, because a wider variant would
/// widen `CanoError` — and every `Result` on the engine's hot path with it.
///
/// ```
/// use std::time::Duration;
/// use cano_error::CanoError;
///
/// let err = CanoError::rate_limited(Duration::from_millis(300), "bucket empty");
/// if let CanoError::RateLimited { retry_after, .. } = &err {
///     assert_eq!(*retry_after, Duration::from_millis(300));
///     assert!(retry_after.as_millis() < 1_000);
/// }
/// ```
pub struct RetryAfter(ErrorDetail);

impl RetryAfter {
    /// The delay.
    pub fn duration(&self) -> Duration {
        self.0.0.retry_after
    }

    /// The error's detail (message, state, task, hint).
    pub fn detail(&self) -> &ErrorDetail {
        &self.0
    }
}

impl std::ops::Deref for RetryAfter {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0.0.retry_after
    }
}

impl PartialEq<Duration> for RetryAfter {
    fn eq(&self, other: &Duration) -> bool {
        self.duration() == *other
    }
}

impl PartialOrd<Duration> for RetryAfter {
    fn partial_cmp(&self, other: &Duration) -> Option<std::cmp::Ordering> {
        self.duration().partial_cmp(other)
    }
}

impl From<&RetryAfter> for Duration {
    fn from(value: &RetryAfter) -> Self {
        value.duration()
    }
}

impl fmt::Debug for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryAfter")
            .field("duration", &self.duration())
            .field("detail", &self.0)
            .finish()
    }
}

/// The payload of [`CanoError::CompensationFailed`]: the error the run failed with and
/// the error of every compensation that did not succeed, with the error's detail.
///
/// ```
/// use cano_error::CanoError;
///
/// let original = CanoError::task_execution("carrier refused the parcel").at(&"Ship", "Ship");
/// let refund = CanoError::task_execution("refund API down").at(&"Charge", "Charge");
/// let err = CanoError::compensation_failed(original, vec![refund]);
/// if let CanoError::CompensationFailed { failure } = &err {
///     assert_eq!(failure.original().message(), "carrier refused the parcel");
///     assert_eq!(failure.errors().len(), 1);
///     assert_eq!(failure.errors()[0].state(), Some("\"Charge\""));
/// }
/// assert!(err.to_string().contains("refund API down"));
/// ```
pub struct CompensationFailure(ErrorDetail);

impl CompensationFailure {
    fn rollback(&self) -> &Rollback {
        // Built only by `CanoError::compensation_failed`, which always sets it.
        self.0
            .0
            .rollback
            .as_deref()
            .expect("a CompensationFailure always carries its rollback")
    }

    /// The error the run failed with, which started the rollback.
    pub fn original(&self) -> &CanoError {
        &self.rollback().original
    }

    /// The error of each compensation that failed, newest step first (the order the
    /// rollback ran them in); each names its state and task.
    pub fn errors(&self) -> &[CanoError] {
        &self.rollback().errors
    }

    /// The error's detail (message, hint).
    pub fn detail(&self) -> &ErrorDetail {
        &self.0
    }
}

impl fmt::Debug for CompensationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompensationFailure")
            .field("original", self.original())
            .field("errors", &self.errors())
            .field("detail", &self.0)
            .finish()
    }
}

/// Matches every variant, binding its detail: the one list to extend with a variant.
macro_rules! each_variant {
    ($error:expr, $detail:ident => $body:expr) => {
        match $error {
            CanoError::Workflow($detail)
            | CanoError::Configuration($detail)
            | CanoError::Timeout($detail)
            | CanoError::RetryExhausted($detail)
            | CanoError::CircuitOpen($detail)
            | CanoError::RateLimited {
                retry_after: RetryAfter($detail),
            }
            | CanoError::TaskExecution($detail)
            | CanoError::Store($detail)
            | CanoError::Resource($detail)
            | CanoError::Cancelled($detail)
            | CanoError::WorkflowVersionMismatch($detail)
            | CanoError::CompensationFailed {
                failure: CompensationFailure($detail),
            } => $body,
        }
    };
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $fn:ident => $variant:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(message: impl Into<Cow<'static, str>>) -> Self {
                Self::$variant(ErrorDetail::new(message))
            }
        )*
    };
}

impl CanoError {
    constructors! {
        /// A [`CanoError::Workflow`] error.
        workflow => Workflow;
        /// A [`CanoError::Configuration`] error.
        configuration => Configuration;
        /// A [`CanoError::Timeout`] error.
        timeout => Timeout;
        /// A [`CanoError::RetryExhausted`] error.
        retry_exhausted => RetryExhausted;
        /// A [`CanoError::CircuitOpen`] error.
        circuit_open => CircuitOpen;
        /// A [`CanoError::TaskExecution`] error from a message.
        task_execution => TaskExecution;
        /// A [`CanoError::Store`] error.
        store => Store;
        /// A [`CanoError::Resource`] error.
        resource => Resource;
        /// A [`CanoError::Cancelled`] error.
        cancelled => Cancelled;
        /// A [`CanoError::WorkflowVersionMismatch`] error.
        workflow_version_mismatch => WorkflowVersionMismatch;
    }

    /// A [`CanoError::RateLimited`] error: the call could go ahead after `retry_after`.
    pub fn rate_limited(retry_after: Duration, message: impl Into<Cow<'static, str>>) -> Self {
        let mut detail = ErrorDetail::new(message);
        detail.0.retry_after = retry_after;
        Self::RateLimited {
            retry_after: RetryAfter(detail),
        }
    }

    /// A [`CanoError::CompensationFailed`] error: the run failed with `original`, and
    /// the compensations that should have undone its completed steps failed with
    /// `errors` (each naming its state and task). The message lists them all.
    pub fn compensation_failed(original: CanoError, errors: Vec<CanoError>) -> Self {
        // A failed rollback of a failed rollback is one rollback: its errors come first
        // (they are of newer steps), the original stays the run's own error.
        let (original, errors) = match original {
            CanoError::CompensationFailed {
                failure: CompensationFailure(mut detail),
            } => match detail.0.rollback.take() {
                Some(inner) => {
                    let Rollback {
                        original,
                        errors: mut all,
                    } = *inner;
                    all.extend(errors);
                    (original, all)
                }
                None => (
                    CanoError::CompensationFailed {
                        failure: CompensationFailure(detail),
                    },
                    errors,
                ),
            },
            other => (other, errors),
        };
        let listed = errors
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{}) {e}", i + 1))
            .collect::<Vec<_>>()
            .join("; ");
        let mut detail = ErrorDetail::new(format!(
            "the run failed ({original}) and {} of its compensations failed: {listed}",
            errors.len()
        ));
        detail.0.hint = Some(Cow::Borrowed(
            "the steps listed were not undone: fix what made their compensations fail, then finish the rollback with Workflow::resume_from (with a checkpoint store), or undo them by hand",
        ));
        detail.0.permanent = true;
        detail.0.rollback = Some(Box::new(Rollback { original, errors }));
        Self::CompensationFailed {
            failure: CompensationFailure(detail),
        }
    }

    /// For a [`CanoError::RateLimited`] error, how long until the call could go ahead.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(**retry_after),
            _ => None,
        }
    }

    /// Wraps a task's own error as [`CanoError::TaskExecution`], keeping its type as the
    /// `source()` (so it can be downcast) and its text as the message.
    pub fn task<E>(error: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        Self::TaskExecution(ErrorDetail::new("")).with_source(error)
    }

    /// The detail every variant carries.
    pub fn detail(&self) -> &ErrorDetail {
        each_variant!(self, detail => detail)
    }

    fn inner_mut(&mut self) -> &mut Inner {
        each_variant!(self, detail => &mut detail.0)
    }

    /// Adds how to fix it.
    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.inner_mut().hint = Some(hint.into());
        self
    }

    /// Sets the underlying error (kept with its type).
    pub fn with_source<E>(mut self, source: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        self.inner_mut().source = Some(Box::new(source));
        self
    }

    /// Marks the error permanent: the retry loop stops at once instead of trying again.
    pub fn permanent(mut self) -> Self {
        self.inner_mut().permanent = true;
        self
    }

    /// Records the state and task where the error happened, unless already known
    /// (an error keeps the innermost place it came from).
    pub fn at(mut self, state: &dyn fmt::Debug, task: &str) -> Self {
        let inner = self.inner_mut();
        if inner.state.is_none() {
            inner.state = Some(format!("{state:?}"));
        }
        if inner.task.is_none() && !task.is_empty() {
            inner.task = Some(Cow::Owned(task.to_owned()));
        }
        self
    }

    /// Whether retrying cannot help: configuration, workflow, cancellation, version
    /// mismatch and failed-rollback errors, an open circuit breaker (retrying would only hammer it; it stays open for its
    /// reset timeout), and any error marked with [`CanoError::permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Workflow(_)
                | Self::Configuration(_)
                | Self::Cancelled(_)
                | Self::CircuitOpen(_)
                | Self::WorkflowVersionMismatch(_)
                | Self::CompensationFailed { .. }
        ) || self.detail().is_permanent()
    }

    /// The error for a task that panicked, from the panic's payload:
    /// `TaskExecution("panic: <message>")`, permanent (a panic is a bug, so retrying
    /// cannot help). Handlers that catch panics of their own use it too.
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        Self::task_execution(format!("panic: {text}"))
            .with_hint(
                "a panic is a bug in the task: fix the invariant it asserts; panics are not retried",
            )
            .permanent()
    }

    /// The message without the state, task and hint.
    pub fn message(&self) -> &str {
        self.detail().message()
    }

    /// The state the error happened in (its `Debug` text), if known.
    pub fn state(&self) -> Option<&str> {
        self.detail().state()
    }

    /// The task the error happened in, if known.
    pub fn task_name(&self) -> Option<&str> {
        self.detail().task()
    }

    /// Finds an error of type `E` in the `source()` chain, the user's own error type
    /// included.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        // From the detail's source, which every variant has (the `RateLimited` variant's
        // `source()` is not derived through its detail).
        let mut next = StdError::source(self.detail());
        while let Some(err) = next {
            if let Some(found) = err.downcast_ref::<E>() {
                return Some(found);
            }
            next = err.source();
        }
        None
    }
}

impl From<String> for CanoError {
    /// A [`CanoError::TaskExecution`] with this message.
    fn from(message: String) -> Self {
        Self::task_execution(message)
    }
}

impl From<&'static str> for CanoError {
    /// A [`CanoError::TaskExecution`] with this message.
    fn from(message: &'static str) -> Self {
        Self::task_execution(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct DiskFull;

    #[test]
    fn user_errors_keep_their_type_through_wrapping() {
        let inner = CanoError::task(DiskFull).at(&"Save", "SaveTask");
        let outer = CanoError::retry_exhausted("gave up after 3 attempts").with_source(inner);
        assert!(outer.downcast_ref::<DiskFull>().is_some());
        assert!(outer.downcast_ref::<std::io::Error>().is_none());
    }

    #[test]
    fn display_names_task_state_and_fix() {
        let err = CanoError::workflow("no handler registered")
            .at(&"Ship", "ShipTask")
            .with_hint("register a task for it");
        assert_eq!(
            err.to_string(),
            "task `ShipTask` in state \"Ship\": no handler registered (fix: register a task for it)"
        );
    }

    #[test]
    fn the_innermost_place_wins() {
        let err = CanoError::store("missing").at(&1, "Inner").at(&2, "Outer");
        assert_eq!(err.state(), Some("1"));
        assert_eq!(err.task_name(), Some("Inner"));
    }

    #[test]
    fn classification() {
        assert!(CanoError::configuration("x").is_permanent());
        assert!(!CanoError::task_execution("x").is_permanent());
        assert!(CanoError::task_execution("x").permanent().is_permanent());
    }

    #[test]
    fn wrapped_error_text_is_the_message() {
        assert_eq!(CanoError::task(DiskFull).to_string(), "disk full");
        // Every variant is one boxed detail: two words, whatever the variant.
        assert_eq!(
            std::mem::size_of::<CanoError>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn rate_limited_keeps_its_delay_and_source() {
        let err = CanoError::rate_limited(Duration::from_millis(250), "bucket empty")
            .with_source(DiskFull)
            .at(&"Fetch", "FetchTask");
        assert!(
            matches!(&err, CanoError::RateLimited { retry_after, .. } if *retry_after == Duration::from_millis(250))
        );
        assert_eq!(err.retry_after(), Some(Duration::from_millis(250)));
        assert!(err.downcast_ref::<DiskFull>().is_some());
        assert_eq!(
            err.to_string(),
            "task `FetchTask` in state \"Fetch\": bucket empty"
        );
        assert!(!err.is_permanent());
    }

    #[test]
    fn a_failed_rollback_keeps_the_original_and_every_compensation_error() {
        let original = CanoError::task(DiskFull).at(&"Ship", "ShipTask");
        let errors = vec![
            CanoError::timeout("hung").at(&"Charge", "Charge"),
            CanoError::task_execution("refused").at(&"Reserve", "Reserve"),
        ];
        let err = CanoError::compensation_failed(original, errors);
        assert!(err.is_permanent());
        // The user's error of the original failure is still found.
        assert!(err.downcast_ref::<DiskFull>().is_some());
        let CanoError::CompensationFailed { failure } = &err else {
            panic!("wrong variant: {err:?}");
        };
        assert_eq!(failure.original().task_name(), Some("ShipTask"));
        let states: Vec<_> = failure.errors().iter().map(|e| e.state()).collect();
        assert_eq!(states, [Some("\"Charge\""), Some("\"Reserve\"")]);
        let text = err.to_string();
        assert!(text.contains("disk full") && text.contains("2 of its compensations failed"));
        assert!(text.contains("1) task `Charge`") && text.contains("2) task `Reserve`"));
        assert_eq!(
            std::mem::size_of::<CanoError>(),
            2 * std::mem::size_of::<usize>()
        );
        // Failing again while rolling back adds to the same list.
        let later = CanoError::task_execution("release refused").at(&"Reserve", "Reserve");
        let merged = CanoError::compensation_failed(err, vec![later]);
        let CanoError::CompensationFailed { failure } = &merged else {
            panic!("wrong variant");
        };
        assert_eq!(failure.original().task_name(), Some("ShipTask"));
        assert_eq!(failure.errors().len(), 3);
    }
}
