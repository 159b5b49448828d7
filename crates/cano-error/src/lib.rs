//! Errors: one enum, [`CanoError`], whose variants carry an [`ErrorDetail`] that says
//! what failed, in which state and task, and how to fix it.
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
//!
//! Code written for cano 0.13 works as it was: its variants are all here (`Generic`,
//! `ResourceNotFound`, `CheckpointStore`, …), built and matched with a message
//! (`CanoError::Store("missing".into())`, `CanoError::Store(msg) => msg.contains(..)`),
//! compared by variant and message, cloned, made from a `&str`, a `String` or an I/O
//! error (`Generic`), and printed with 0.13's prefixes (`Task execution error: …`).

mod compat;
mod detail;

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

pub use detail::{BoxError, CompensationFailure, ErrorDetail, RetryAfter};

/// Shorthand for `Result<T, CanoError>`.
pub type CanoResult<T> = Result<T, CanoError>;

/// Everything that can go wrong in cano.
///
/// Match on the variant to decide what to do; print it to learn what happened, where,
/// and how to fix it. New variants may be added, so matches need a `_` arm. Two errors
/// are equal when they are of the same variant with the same message (for
/// `CompensationFailed`, the same errors; for `RateLimited`, also the same delay), as
/// in cano 0.13.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CanoError {
    /// A task failed (returned an error or panicked).
    TaskExecution(ErrorDetail),
    /// A store operation failed: a missing key, a value of another type.
    Store(ErrorDetail),
    /// The run could not go on: no handler for the state reached, a single-task state
    /// returned `Split`, or the workflow timeout elapsed.
    Workflow(ErrorDetail),
    /// The workflow or a resource is set up wrongly: no exit state, a duplicate
    /// registration, a limit too small to work.
    Configuration(ErrorDetail),
    /// Every attempt the task's retry mode allows has failed; the last error is the
    /// `source()`.
    RetryExhausted(ErrorDetail),
    /// One attempt of a task ran past its `attempt_timeout`.
    Timeout(ErrorDetail),
    /// A circuit breaker refused the call before the task ran.
    CircuitOpen(ErrorDetail),
    /// A rate limiter refused the call and waiting was not allowed (or the wait would
    /// have been too long); `retry_after` says when the call could go ahead (it
    /// dereferences to a `Duration` and compares with one).
    RateLimited {
        /// How long until the limiter could admit the call, with the error's detail.
        retry_after: RetryAfter,
    },
    /// A checkpoint store could not append, load or clear (cano 0.13's name; cano's own
    /// stores report [`Store`](Self::Store)).
    CheckpointStore(ErrorDetail),
    /// A run failed and rolling it back failed too. `errors[0]` is the error the run
    /// failed with, the rest each compensation that did not succeed (see
    /// [`CompensationFailure`]).
    CompensationFailed {
        /// The original error, then the compensation errors.
        errors: CompensationFailure,
    },
    /// Anything else: what `From<&str>`, `From<String>` and I/O errors become.
    Generic(ErrorDetail),
    /// No resource is registered under the key asked for.
    ResourceNotFound(ErrorDetail),
    /// The resource under the key is of another type than the one asked for.
    ResourceTypeMismatch(ErrorDetail),
    /// A key was registered twice in one `Resources`.
    ResourceDuplicateKey(ErrorDetail),
    /// A resource failed to set up or tear down.
    Resource(ErrorDetail),
    /// The run was cancelled through its cancellation token or handle.
    Cancelled(ErrorDetail),
    /// A checkpointed run was written by another version of the workflow (or another
    /// shape of its state type) than the one asked to resume it (see
    /// `Workflow::with_workflow_version`).
    WorkflowVersionMismatch(ErrorDetail),
    /// The run reached a wait state and parked: nothing of it is running, its log ends
    /// with a `Wait` row, and it goes on when a signal it waits for is sent or its
    /// deadline passes (see the `wait` module). Not a failure: nothing is rolled back
    /// and no `Fail` row is written.
    Parked(ErrorDetail),
}

/// Matches every variant that carries an [`ErrorDetail`], binding it; `CompensationFailed`
/// goes to `$failed`. The one list to extend with a variant.
macro_rules! each_variant {
    ($error:expr, $detail:ident => $body:expr, $errors:ident => $failed:expr) => {
        match $error {
            CanoError::TaskExecution($detail)
            | CanoError::Store($detail)
            | CanoError::Workflow($detail)
            | CanoError::Configuration($detail)
            | CanoError::RetryExhausted($detail)
            | CanoError::Timeout($detail)
            | CanoError::CircuitOpen($detail)
            | CanoError::RateLimited {
                retry_after: RetryAfter($detail),
            }
            | CanoError::CheckpointStore($detail)
            | CanoError::Generic($detail)
            | CanoError::ResourceNotFound($detail)
            | CanoError::ResourceTypeMismatch($detail)
            | CanoError::ResourceDuplicateKey($detail)
            | CanoError::Resource($detail)
            | CanoError::Cancelled($detail)
            | CanoError::WorkflowVersionMismatch($detail)
            | CanoError::Parked($detail) => $body,
            CanoError::CompensationFailed { errors: $errors } => $failed,
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

/// The detail of a failed rollback built from no error at all.
static NO_ERRORS: LazyLock<ErrorDetail> = LazyLock::new(|| ErrorDetail::new("compensation failed"));

/// What every failed rollback says about fixing it.
const ROLLBACK_HINT: &str = "the steps listed were not undone: fix what made their compensations fail, then finish the rollback with Workflow::resume_from (with a checkpoint store), or undo them by hand";

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
        /// A [`CanoError::CheckpointStore`] error.
        checkpoint_store => CheckpointStore;
        /// A [`CanoError::Parked`] outcome.
        parked => Parked;
        /// A [`CanoError::Generic`] error.
        generic => Generic;
        /// A [`CanoError::ResourceNotFound`] error.
        resource_not_found => ResourceNotFound;
        /// A [`CanoError::ResourceTypeMismatch`] error.
        resource_type_mismatch => ResourceTypeMismatch;
        /// A [`CanoError::ResourceDuplicateKey`] error.
        resource_duplicate_key => ResourceDuplicateKey;
    }

    /// A [`CanoError::RateLimited`] error: the call could go ahead after `retry_after`.
    pub fn rate_limited(retry_after: Duration, message: impl Into<Cow<'static, str>>) -> Self {
        let mut detail = ErrorDetail::new(message);
        detail.0.retry_after = retry_after;
        Self::RateLimited {
            retry_after: RetryAfter(detail),
        }
    }

    /// A [`CanoError::CompensationFailed`] error from every error of a failed rollback:
    /// `errors[0]` the one the run failed with, then each compensation's (each naming
    /// its state and task). Permanent.
    ///
    /// A failed rollback of a failed rollback is one rollback: when `errors[0]` is
    /// itself a `CompensationFailed`, its errors come first and the new ones follow.
    pub fn compensation_failed(errors: Vec<CanoError>) -> Self {
        let mut errors = errors.into_iter();
        let mut all = match errors.next() {
            Some(CanoError::CompensationFailed { errors: earlier }) => *earlier.0,
            Some(original) => vec![original],
            None => Vec::new(),
        };
        all.extend(errors);
        Self::CompensationFailed {
            errors: CompensationFailure::from(all),
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

    /// The detail: the error's own, or for a failed rollback the original error's.
    pub fn detail(&self) -> &ErrorDetail {
        each_variant!(self, detail => detail, errors => errors.original().map_or(&*NO_ERRORS, CanoError::detail))
    }

    fn inner_mut(&mut self) -> &mut detail::Inner {
        each_variant!(self, detail => &mut detail.0, errors => {
            if errors.0.is_empty() {
                errors.0.push(CanoError::generic("compensation failed"));
            }
            errors.0[0].inner_mut()
        })
    }

    /// Puts what was being done in front of the message, keeping the variant (so code
    /// matching on it still matches): `setup of resource "db": connection refused`.
    pub fn with_context(mut self, context: impl fmt::Display) -> Self {
        let inner = self.inner_mut();
        inner.message = Cow::Owned(format!("{context}: {}", inner.message));
        self
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
        self.inner_mut().source = Some(Arc::new(source));
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
    /// mismatch, resource-registry and failed-rollback errors, an open circuit breaker
    /// (retrying would only hammer it; it stays open for its reset timeout), and any
    /// error marked with [`CanoError::permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Workflow(_)
                | Self::Configuration(_)
                | Self::Cancelled(_)
                | Self::Parked(_)
                | Self::CircuitOpen(_)
                | Self::WorkflowVersionMismatch(_)
                | Self::CompensationFailed { .. }
                | Self::ResourceNotFound(_)
                | Self::ResourceTypeMismatch(_)
                | Self::ResourceDuplicateKey(_)
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

    /// The message without the state, task and hint (for a failed rollback, the
    /// original error's).
    pub fn message(&self) -> &str {
        match self {
            Self::CompensationFailed { errors } if errors.is_empty() => "compensation failed",
            _ => self.detail().message(),
        }
    }

    /// The variant, as a snake_case word (cano 0.13's categories): `"task_execution"`,
    /// `"store"`, `"generic"`, …; for cano's own variants `"rate_limited"`,
    /// `"resource"`, `"cancelled"` and `"workflow_version_mismatch"`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::TaskExecution(_) => "task_execution",
            Self::Store(_) => "store",
            Self::Workflow(_) => "workflow",
            Self::Configuration(_) => "configuration",
            Self::RetryExhausted(_) => "retry_exhausted",
            Self::Timeout(_) => "timeout",
            Self::CircuitOpen(_) => "circuit_open",
            Self::RateLimited { .. } => "rate_limited",
            Self::CheckpointStore(_) => "checkpoint_store",
            Self::CompensationFailed { .. } => "compensation_failed",
            Self::Generic(_) => "generic",
            Self::ResourceNotFound(_) => "resource_not_found",
            Self::ResourceTypeMismatch(_) => "resource_type_mismatch",
            Self::ResourceDuplicateKey(_) => "resource_duplicate_key",
            Self::Resource(_) => "resource",
            Self::Cancelled(_) => "cancelled",
            Self::WorkflowVersionMismatch(_) => "workflow_version_mismatch",
            Self::Parked(_) => "parked",
        }
    }

    /// The words a printed error of this variant starts with (cano 0.13's).
    fn prefix(&self) -> &'static str {
        match self {
            Self::TaskExecution(_) => "Task execution error",
            Self::Store(_) => "Store error",
            Self::Workflow(_) => "Workflow error",
            Self::Configuration(_) => "Configuration error",
            Self::RetryExhausted(_) => "Retry exhausted",
            Self::Timeout(_) => "Timeout error",
            Self::CircuitOpen(_) => "Circuit open",
            Self::RateLimited { .. } => "Rate limited",
            Self::CheckpointStore(_) => "Checkpoint store error",
            Self::CompensationFailed { .. } => "Compensation failed",
            Self::Generic(_) => "Error",
            Self::ResourceNotFound(_) => "Resource not found",
            Self::ResourceTypeMismatch(_) => "Resource type mismatch",
            Self::ResourceDuplicateKey(_) => "Resource duplicate key",
            Self::Resource(_) => "Resource error",
            Self::Cancelled(_) => "Cancelled",
            Self::WorkflowVersionMismatch(_) => "Workflow version mismatch",
            Self::Parked(_) => "Parked",
        }
    }

    /// Whether the run parked at a wait state ([`CanoError::Parked`]) rather than failed.
    pub fn is_parked(&self) -> bool {
        matches!(self, Self::Parked(_))
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

/// `<prefix>: <detail>`: cano 0.13's prefix, then where the error happened, what
/// happened and how to fix it. A failed rollback lists every error.
impl fmt::Display for CanoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::CompensationFailed { errors } = self else {
            return write!(f, "{}: {}", self.prefix(), self.detail());
        };
        write!(f, "Compensation failed ({} error(s))", errors.len())?;
        for (i, error) in errors.iter().enumerate() {
            match i {
                0 => write!(f, "; original: {error}")?,
                _ => write!(f, "; compensation #{i}: {error}")?,
            }
        }
        write!(f, " (fix: {ROLLBACK_HINT})")
    }
}

impl StdError for CanoError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // A failed rollback's cause is the run's own error, so `downcast_ref` finds
            // the user's error type through it.
            Self::CompensationFailed { errors } => {
                errors.original().map(|e| e as &(dyn StdError + 'static))
            }
            _ => StdError::source(self.detail()),
        }
    }
}

#[cfg(test)]
mod tests;
