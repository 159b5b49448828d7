//! [`ErrorDetail`]: what every [`CanoError`](crate::CanoError) carries.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::CanoError;

/// A boxed error from user code, kept with its type.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The payload of every [`CanoError`]: the message, where it happened, how to fix it,
/// and the underlying error.
///
/// It reads as its message where cano 0.13 had a `String`: it dereferences to `str`,
/// compares with `&str` and `String`, and is made from either, so
/// `CanoError::TaskExecution("declined".into())` builds an error and
/// `CanoError::TaskExecution(msg) if msg.contains("declined")` matches one.
///
/// It is boxed so that `Result<S, CanoError>` stays two words wide on the hot path.
///
/// ```
/// use cano_error::CanoError;
///
/// let err = CanoError::TaskExecution("card declined".into());
/// match &err {
///     CanoError::TaskExecution(msg) => {
///         assert!(msg.contains("declined"));
///         assert_eq!(msg, "card declined");
///     }
///     _ => unreachable!(),
/// }
/// ```
#[derive(Clone)]
pub struct ErrorDetail(pub(crate) Box<Inner>);

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) message: Cow<'static, str>,
    pub(crate) state: Option<String>,
    pub(crate) task: Option<Cow<'static, str>>,
    pub(crate) hint: Option<Cow<'static, str>>,
    /// Shared, so that an error can be cloned with its cause.
    pub(crate) source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
    pub(crate) permanent: bool,
    /// Only meaningful for [`CanoError::RateLimited`].
    pub(crate) retry_after: Duration,
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

    /// The message, or the source's text when the message is empty (an error wrapped
    /// with [`CanoError::task`]).
    pub(crate) fn text(&self) -> Cow<'_, str> {
        match (&*self.0.message, &self.0.source) {
            ("", Some(source)) => Cow::Owned(source.to_string()),
            (message, _) => Cow::Borrowed(message),
        }
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
        f.write_str(&self.text())?;
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
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The message, as cano 0.13's `String` payload read.
impl std::ops::Deref for ErrorDetail {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0.message
    }
}

impl AsRef<str> for ErrorDetail {
    fn as_ref(&self) -> &str {
        &self.0.message
    }
}

impl From<&str> for ErrorDetail {
    fn from(message: &str) -> Self {
        Self::new(message.to_owned())
    }
}

impl From<String> for ErrorDetail {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<Cow<'static, str>> for ErrorDetail {
    fn from(message: Cow<'static, str>) -> Self {
        Self::new(message)
    }
}

/// Two details are equal when their messages are (as cano 0.13's payloads were);
/// state, task, hint and source are not compared.
impl PartialEq for ErrorDetail {
    fn eq(&self, other: &Self) -> bool {
        self.0.message == other.0.message
    }
}

impl Eq for ErrorDetail {}

impl PartialEq<str> for ErrorDetail {
    fn eq(&self, other: &str) -> bool {
        *self.0.message == *other
    }
}

impl PartialEq<&str> for ErrorDetail {
    fn eq(&self, other: &&str) -> bool {
        *self.0.message == **other
    }
}

impl PartialEq<String> for ErrorDetail {
    fn eq(&self, other: &String) -> bool {
        *self.0.message == **other
    }
}

impl PartialEq<ErrorDetail> for str {
    fn eq(&self, other: &ErrorDetail) -> bool {
        *self == *other.0.message
    }
}

impl PartialEq<ErrorDetail> for &str {
    fn eq(&self, other: &ErrorDetail) -> bool {
        **self == *other.0.message
    }
}

impl PartialEq<ErrorDetail> for String {
    fn eq(&self, other: &ErrorDetail) -> bool {
        **self == *other.0.message
    }
}

impl From<ErrorDetail> for String {
    fn from(detail: ErrorDetail) -> Self {
        detail.0.message.into_owned()
    }
}

/// The payload of [`CanoError::RateLimited`]: how long until the refused call could go
/// ahead, together with the error's detail.
///
/// It dereferences to that [`Duration`] and compares with one, so
/// `CanoError::RateLimited { retry_after, .. }` reads as the delay it names. It is one
/// boxed pointer, not a `Duration` beside the detail, because a wider variant would
/// widen `CanoError`, and every `Result` on the engine's hot path with it.
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
#[derive(Clone, PartialEq, Eq)]
pub struct RetryAfter(pub(crate) ErrorDetail);

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

/// The payload of [`CanoError::CompensationFailed`]: every error of a failed rollback,
/// the one the run failed with first, then each compensation's that did not succeed
/// (newest step first, the order the rollback ran them in).
///
/// It reads as cano 0.13's `Vec<CanoError>` did: it dereferences to the slice, so
/// `errors[0]` is the original failure, `errors.len()` counts them all and
/// `errors.iter()` walks them; it is made from a `Vec` and compares with one.
/// [`original`](Self::original) and [`compensations`](Self::compensations) name the
/// two parts.
///
/// ```
/// use cano_error::CanoError;
///
/// let original = CanoError::task_execution("carrier refused the parcel").at(&"Ship", "Ship");
/// let refund = CanoError::task_execution("refund API down").at(&"Charge", "Charge");
/// let err = CanoError::compensation_failed(vec![original, refund]);
/// if let CanoError::CompensationFailed { errors } = &err {
///     assert_eq!(errors[0].message(), "carrier refused the parcel");
///     assert_eq!(errors.compensations().len(), 1);
///     assert_eq!(errors.compensations()[0].state(), Some("\"Charge\""));
/// }
/// assert!(err.to_string().contains("refund API down"));
/// ```
// A boxed `Vec`: one word, so that `CanoError` stays two words wide (a `Vec` or a boxed
// slice would widen every `Result` on the engine's hot path).
#[allow(clippy::box_collection)]
#[derive(Clone, PartialEq, Eq)]
pub struct CompensationFailure(pub(crate) Box<Vec<CanoError>>);

impl CompensationFailure {
    /// The error the run failed with, which started the rollback (`None` only for a
    /// failure built from an empty list).
    pub fn original(&self) -> Option<&CanoError> {
        self.0.first()
    }

    /// The error of each compensation that failed, newest step first; each names its
    /// state and task.
    pub fn compensations(&self) -> &[CanoError] {
        self.0.get(1..).unwrap_or_default()
    }
}

impl std::ops::Deref for CompensationFailure {
    type Target = [CanoError];
    fn deref(&self) -> &[CanoError] {
        &self.0
    }
}

impl From<Vec<CanoError>> for CompensationFailure {
    fn from(errors: Vec<CanoError>) -> Self {
        Self(Box::new(errors))
    }
}

impl PartialEq<Vec<CanoError>> for CompensationFailure {
    fn eq(&self, other: &Vec<CanoError>) -> bool {
        *self.0 == *other
    }
}

impl<'a> IntoIterator for &'a CompensationFailure {
    type Item = &'a CanoError;
    type IntoIter = std::slice::Iter<'a, CanoError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for CompensationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}
