//! The retry loop itself.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::RetryMode;

/// Whether a failed attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The next attempt may succeed (a timeout, a dropped connection).
    Retryable,
    /// The next attempt will fail the same way (bad input, a missing permission):
    /// stop at once.
    Permanent,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError<E> {
    /// The operation returned an error.
    Failed(E),
    /// The attempt ran past the per-attempt timeout and was dropped.
    TimedOut(Duration),
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => e.fmt(f),
            Self::TimedOut(d) => write!(f, "attempt timed out after {d:?}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for AttemptError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(e) => Some(e),
            Self::TimedOut(_) => None,
        }
    }
}

/// Why the whole loop gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryError<E> {
    /// The classifier called an error permanent, so no further attempt was made.
    Permanent {
        /// Attempts made, the failing one included.
        attempts: usize,
        /// The permanent error.
        error: E,
    },
    /// Every attempt the mode allows failed.
    Exhausted {
        /// Attempts made.
        attempts: usize,
        /// How the last attempt failed.
        last: AttemptError<E>,
    },
}

impl<E> RetryError<E> {
    /// Attempts made before giving up.
    pub fn attempts(&self) -> usize {
        match self {
            Self::Permanent { attempts, .. } | Self::Exhausted { attempts, .. } => *attempts,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Permanent { attempts, error } => {
                write!(
                    f,
                    "permanent error on attempt {attempts}, not retried: {error}"
                )
            }
            Self::Exhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempt(s); last: {last}")
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Permanent { error, .. } => Some(error),
            Self::Exhausted { last, .. } => Some(last),
        }
    }
}

/// A retry about to happen, as reported to the `on_retry` callback.
#[derive(Debug)]
pub struct RetryEvent<'a, E> {
    /// The attempt that just failed, starting at 1.
    pub attempt: usize,
    /// How it failed.
    pub error: &'a AttemptError<E>,
    /// The pause before the next attempt.
    pub delay: Duration,
}

/// A retry policy: a [`RetryMode`] plus an optional per-attempt timeout.
///
/// It is `Copy`, so a caller keeps one per operation and runs it as often as needed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Retry {
    mode: RetryMode,
    attempt_timeout: Option<Duration>,
}

impl Retry {
    /// A policy following `mode`, with no per-attempt timeout.
    pub const fn new(mode: RetryMode) -> Self {
        Self {
            mode,
            attempt_timeout: None,
        }
    }

    /// Drops any attempt that runs longer than `timeout`; the loop then treats it as
    /// a retryable failure ([`AttemptError::TimedOut`]).
    pub const fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Sets or clears the per-attempt timeout.
    pub const fn with_attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The retry mode.
    pub const fn mode(&self) -> &RetryMode {
        &self.mode
    }

    /// The per-attempt timeout, if any.
    pub const fn timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// Runs `op` until it succeeds or the mode runs out, treating every error as
    /// retryable.
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(op, |_: &E| ErrorClass::Retryable, |_: RetryEvent<'_, E>| {})
            .await
    }

    /// Runs `op` until it succeeds, `classify` calls an error permanent, or the mode
    /// runs out. `on_retry` is told about each retry before its pause.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cano_retry::{ErrorClass, Retry, RetryError, RetryMode};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut attempts = 0;
    /// let result: Result<(), _> = Retry::new(RetryMode::fixed(5, Duration::ZERO))
    ///     .run_with(
    ///         || { attempts += 1; async { Err::<(), _>("invalid input") } },
    ///         |e: &&str| if e.starts_with("invalid") { ErrorClass::Permanent } else { ErrorClass::Retryable },
    ///         |_| {},
    ///     )
    ///     .await;
    /// assert!(matches!(result, Err(RetryError::Permanent { attempts: 1, .. })));
    /// assert_eq!(attempts, 1);
    /// # }
    /// ```
    pub async fn run_with<T, E, F, Fut, C, N>(
        &self,
        mut op: F,
        classify: C,
        on_retry: N,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> ErrorClass,
        N: FnMut(RetryEvent<'_, E>),
    {
        match self.attempt(op()).await {
            Ok(value) => Ok(value),
            Err(first) => self.continue_after(first, op, classify, on_retry).await,
        }
    }

    /// Runs one attempt under the per-attempt timeout.
    ///
    /// With [`continue_after`](Self::continue_after) a caller can run the first attempt
    /// itself and build the rest of the loop only if it fails, keeping the common,
    /// successful case small.
    pub async fn attempt<T, E, Fut>(&self, attempt: Fut) -> Result<T, AttemptError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        match self.attempt_timeout {
            None => attempt.await.map_err(AttemptError::Failed),
            Some(limit) => match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result.map_err(AttemptError::Failed),
                Err(_) => Err(AttemptError::TimedOut(limit)),
            },
        }
    }

    /// Goes on after a first attempt that failed with `first`: classifies it, pauses,
    /// and runs `op` again as [`run_with`](Self::run_with) would have.
    pub async fn continue_after<T, E, F, Fut, C, N>(
        &self,
        first: AttemptError<E>,
        mut op: F,
        classify: C,
        mut on_retry: N,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> ErrorClass,
        N: FnMut(RetryEvent<'_, E>),
    {
        let mut failed = 0usize;
        let mut error = first;
        loop {
            if let AttemptError::Failed(e) = &error
                && classify(e) == ErrorClass::Permanent
            {
                let AttemptError::Failed(error) = error else {
                    unreachable!()
                };
                return Err(RetryError::Permanent {
                    attempts: failed + 1,
                    error,
                });
            }
            let Some(delay) = self.mode.delay_for_attempt(failed) else {
                return Err(RetryError::Exhausted {
                    attempts: failed + 1,
                    last: error,
                });
            };
            failed += 1;
            on_retry(RetryEvent {
                attempt: failed,
                error: &error,
                delay,
            });
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match self.attempt(op()).await {
                Ok(value) => return Ok(value),
                Err(next) => error = next,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures() {
        let calls = Cell::new(0);
        let result: Result<usize, RetryError<String>> =
            Retry::new(RetryMode::fixed(3, Duration::from_secs(1)))
                .run(|| {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 3 {
                            Err(format!("fail {n}"))
                        } else {
                            Ok(n)
                        }
                    }
                })
                .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn exhausts_and_reports_the_last_error() {
        let start = tokio::time::Instant::now();
        let result: Result<(), RetryError<&str>> =
            Retry::new(RetryMode::fixed(2, Duration::from_millis(10)))
                .run(|| async { Err("down") })
                .await;
        assert_eq!(
            result,
            Err(RetryError::Exhausted {
                attempts: 3,
                last: AttemptError::Failed("down")
            })
        );
        // Two pauses of 10 ms on the paused clock.
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_stop_the_loop() {
        let calls = Cell::new(0);
        let result: Result<(), _> = Retry::new(RetryMode::fixed(9, Duration::ZERO))
            .run_with(
                || {
                    calls.set(calls.get() + 1);
                    async { Err::<(), u32>(400) }
                },
                |code| {
                    if *code >= 400 {
                        ErrorClass::Permanent
                    } else {
                        ErrorClass::Retryable
                    }
                },
                |_| {},
            )
            .await;
        assert_eq!(
            result,
            Err(RetryError::Permanent {
                attempts: 1,
                error: 400
            })
        );
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_time_out_and_are_retried() {
        let calls = Cell::new(0);
        let mut seen = Vec::new();
        let result: Result<&str, RetryError<()>> =
            Retry::new(RetryMode::fixed(1, Duration::from_millis(5)))
                .attempt_timeout(Duration::from_millis(50))
                .run_with(
                    || {
                        calls.set(calls.get() + 1);
                        let first = calls.get() == 1;
                        async move {
                            if first {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            Ok("second attempt")
                        }
                    },
                    |_| ErrorClass::Retryable,
                    |event| seen.push((event.attempt, event.error.clone(), event.delay)),
                )
                .await;
        assert_eq!(result, Ok("second attempt"));
        assert_eq!(
            seen,
            vec![(
                1,
                AttemptError::TimedOut(Duration::from_millis(50)),
                Duration::from_millis(5)
            )]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sub_millisecond_delays_are_slept_in_full() {
        let start = tokio::time::Instant::now();
        let _ = Retry::new(RetryMode::fixed(4, Duration::from_micros(300)))
            .run(|| async { Err::<(), _>(()) })
            .await;
        assert!(start.elapsed() >= Duration::from_micros(1200));
    }

    #[test]
    fn errors_display_the_attempts() {
        let e: RetryError<&str> = RetryError::Exhausted {
            attempts: 4,
            last: AttemptError::TimedOut(Duration::from_millis(7)),
        };
        assert_eq!(
            e.to_string(),
            "gave up after 4 attempt(s); last: attempt timed out after 7ms"
        );
        assert_eq!(e.attempts(), 4);
    }
}
