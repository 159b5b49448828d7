//! [`run_with_retries`]: a task's retry policy applied to any async call, outside a
//! workflow (cano 0.13's standalone loop).

use std::future::Future;

use cano_retry::{AttemptError, ErrorClass, RetryError};

use crate::error::CanoError;
use crate::task::TaskConfig;

/// Runs `run_fn` as a task with `config` would be run: each attempt admitted by the
/// config's circuit breaker and rate limiter (when it has them), bounded by its attempt
/// timeout, and retried by its [`RetryMode`](crate::RetryMode) until one succeeds.
///
/// A permanent error ([`CanoError::is_permanent`]) and a refusal by an open breaker end
/// the loop at once (retrying would only press on a dependency the breaker protects).
/// With one attempt made, its own error comes back; after several,
/// [`CanoError::RetryExhausted`] naming the count, with the last error as its source.
/// A timed-out attempt is a [`CanoError::Timeout`].
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use cano_core::{CanoError, TaskConfig, run_with_retries};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let calls = AtomicU32::new(0);
/// let config = TaskConfig::new().with_fixed_retry(3, Duration::ZERO);
/// let answer = run_with_retries(&config, || async {
///     match calls.fetch_add(1, Ordering::SeqCst) {
///         0 | 1 => Err(CanoError::task_execution("503")),
///         _ => Ok(42),
///     }
/// })
/// .await;
/// assert_eq!(answer.unwrap(), 42);
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # }
/// ```
pub async fn run_with_retries<T, F, Fut>(config: &TaskConfig, run_fn: F) -> Result<T, CanoError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CanoError>>,
{
    let refused = |e: &CanoError| e.is_permanent() || matches!(e, CanoError::CircuitOpen(_));
    let outcome = config
        .retry_policy()
        .run_with(
            || admitted(config, &run_fn),
            |e: &CanoError| {
                if refused(e) {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Retryable
                }
            },
            |_| {},
        )
        .await;
    outcome.map_err(|failure| {
        let failed = |last: AttemptError<CanoError>| match last {
            AttemptError::Failed(error) => error,
            AttemptError::TimedOut(limit) => {
                CanoError::timeout(format!("attempt did not finish within {limit:?}"))
                    .with_hint("raise TaskConfig::with_attempt_timeout, or make the call faster")
            }
        };
        match failure {
            RetryError::Permanent { error, .. } => error,
            RetryError::Exhausted { attempts: 1, last } => failed(last),
            RetryError::Exhausted { attempts, last } => {
                let last = failed(last);
                CanoError::retry_exhausted(format!(
                    "all {attempts} attempts failed; last error: {last}"
                ))
                .with_hint(
                    "fix the failing dependency, or allow more retries with TaskConfig::with_retry",
                )
                .with_source(last)
            }
        }
    })
}

/// One attempt, admitted by the breaker and the limiter of `config`.
async fn admitted<T, F, Fut>(config: &TaskConfig, run_fn: &F) -> Result<T, CanoError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CanoError>>,
{
    let permit = match config.circuit_breaker() {
        Some(breaker) => Some((breaker, breaker.try_acquire()?)),
        None => None,
    };
    if let Some(limiter) = config.rate_limiter() {
        let waited = match config.max_throttle_wait() {
            None => limiter.acquire().await,
            Some(max) => match tokio::time::timeout(max, limiter.acquire()).await {
                Ok(waited) => waited,
                Err(_) => Err(CanoError::rate_limited(
                    limiter.available_in(1),
                    format!(
                        "rate limiter `{}` had no room within {max:?}",
                        limiter.name()
                    ),
                )),
            },
        };
        if let Err(e) = waited {
            // The call never happened: the breaker hears nothing of it.
            if let Some((breaker, permit)) = permit {
                breaker.release(permit);
            }
            return Err(e);
        }
    }
    let result = run_fn().await;
    if let Some((breaker, permit)) = permit {
        match &result {
            Ok(_) => {
                breaker.record_success(permit);
            }
            Err(error) => {
                breaker.record_error(permit, error);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use cano_circuit::{CircuitBreaker, CircuitPolicy};

    use crate::RetryMode;

    fn failing(calls: &AtomicU32) -> impl Future<Output = Result<u32, CanoError>> + '_ {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err(CanoError::task_execution("the ledger is locked")) }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_run_out_into_retry_exhausted_naming_the_last_error() {
        let calls = AtomicU32::new(0);
        let config = TaskConfig::new().with_retry(RetryMode::fixed(2, Duration::from_secs(1)));
        let err = run_with_retries(&config, || failing(&calls))
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(err, CanoError::RetryExhausted(_)), "{err}");
        assert!(err.to_string().contains("all 3 attempts") && err.to_string().contains("ledger"));
        // One attempt only: its own error.
        let err = run_with_retries(&TaskConfig::minimal(), || failing(&calls))
            .await
            .unwrap_err();
        assert!(matches!(err, CanoError::TaskExecution(_)), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_and_an_open_breaker_end_the_loop() {
        let calls = AtomicU32::new(0);
        let config = TaskConfig::new().with_fixed_retry(5, Duration::ZERO);
        let err = run_with_retries(&config, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(CanoError::configuration("bad input").permanent())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, CanoError::Configuration(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let breaker = Arc::new(CircuitBreaker::new(CircuitPolicy {
            failure_threshold: 2,
            ..Default::default()
        }));
        let calls = AtomicU32::new(0);
        let guarded = TaskConfig::new()
            .with_fixed_retry(5, Duration::ZERO)
            .with_circuit_breaker(breaker.clone());
        let err = run_with_retries(&guarded, || failing(&calls))
            .await
            .unwrap_err();
        assert!(matches!(err, CanoError::CircuitOpen(_)), "{err}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the third attempt was refused"
        );
        assert!(breaker.state().is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_timeout_is_a_timeout_and_is_retried() {
        let calls = AtomicU32::new(0);
        let config = TaskConfig::new()
            .with_fixed_retry(1, Duration::ZERO)
            .with_attempt_timeout(Duration::from_secs(1));
        let err = run_with_retries(&config, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("within 1s")), "{err}");
    }
}
