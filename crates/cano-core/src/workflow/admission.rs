//! One attempt of a task whose config has a circuit breaker or a rate limiter: admitted
//! first, then run under its timeout, then reported to the breaker. Tasks without either
//! never come here and pay nothing for it.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use cano_circuit::{CircuitBreaker, CircuitState, Permit, RateLimiter};
use tokio::time::Instant;

use crate::error::CanoError;
use crate::observer::Observers;
use crate::resource::Resources;
use crate::run::RunContext;
use crate::task::{Task, TaskConfig, TaskResult};

use super::attempt::{caught, timeout_error};

/// Where an attempt runs, for errors and observer events.
pub(crate) struct Site<'a, S> {
    pub(crate) state: &'a S,
    pub(crate) task: &'a str,
    pub(crate) run: &'a RunContext,
    pub(crate) observers: &'a Observers,
}

// Only references: copyable whatever the state type is (a derive would demand `S: Copy`).
impl<S> Clone for Site<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Site<'_, S> {}

impl<S: Debug> Site<'_, S> {
    fn tell(&self, event: impl Fn(&dyn crate::RunObserver, &S, &str)) {
        if !self.observers.is_empty() {
            self.observers.each(|o| event(o, self.state, self.task));
        }
    }
}

/// One admitted attempt, its timeout included: a timeout comes back as the
/// [`CanoError::Timeout`] the run would report.
pub(crate) fn guarded_attempt<'a, S: Debug, K>(
    task: &'a dyn Task<S, K>,
    config: &'a TaskConfig,
    resources: &'a Resources<K>,
    site: Site<'a, S>,
) -> Pin<Box<impl Future<Output = Result<TaskResult<S>, CanoError>> + 'a>> {
    Box::pin(async move {
        let run = site.run.run_id();
        let held = match config.circuit_breaker() {
            None => None,
            Some(breaker) => match breaker.try_acquire() {
                Ok(permit) => {
                    if permit.transition() == Some(CircuitState::HalfOpen) {
                        site.tell(|o, s, t| o.circuit_half_opened(run, s, t, breaker.name()));
                    }
                    Some(Held {
                        breaker,
                        permit: Some(permit),
                    })
                }
                Err(refused) => {
                    site.tell(|o, s, t| o.circuit_rejected(run, s, t, breaker.name()));
                    return Err(refused);
                }
            },
        };
        if let Some(limiter) = config.rate_limiter() {
            // Refused or abandoned here, the call never happened: `held` hands its
            // permit back without a verdict.
            throttle(limiter, config.max_throttle_wait(), site).await?;
        }
        let result = match config.attempt_timeout() {
            None => caught(task.run(resources)).await,
            Some(limit) => match tokio::time::timeout(limit, caught(task.run(resources))).await {
                Ok(result) => result,
                Err(_) => Err(timeout_error(config, site.state, site.task)),
            },
        };
        if let Some(held) = held {
            let breaker = held.breaker;
            match held.record(&result) {
                Some(CircuitState::Open { .. }) => {
                    site.tell(|o, s, t| o.circuit_opened(run, s, t, breaker.name()))
                }
                Some(CircuitState::Closed) => {
                    site.tell(|o, s, t| o.circuit_closed(run, s, t, breaker.name()))
                }
                _ => {}
            }
        }
        result
    })
}

/// The permit of one attempt. An attempt the engine abandons (its run cancelled or
/// timed out, a split that no longer needs the branch, a limiter that refused it) says
/// nothing about the dependency, so dropping this hands the permit back without a
/// verdict rather than counting a failure as a bare dropped permit would.
struct Held<'a> {
    breaker: &'a CircuitBreaker,
    permit: Option<Permit<'a>>,
}

impl Held<'_> {
    /// Reports the attempt's outcome; the state the breaker moved to, if it moved.
    fn record<T>(mut self, result: &Result<T, CanoError>) -> Option<CircuitState> {
        let permit = self.permit.take()?;
        match result {
            Ok(_) => self.breaker.record_success(permit),
            Err(error) => self.breaker.record_error(permit, error),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

/// Waits for the limiter's leave, at most `max_wait`.
async fn throttle<S: Debug>(
    limiter: &RateLimiter,
    max_wait: Option<Duration>,
    site: Site<'_, S>,
) -> Result<(), CanoError> {
    let refused = match limiter.try_acquire() {
        Ok(()) => return Ok(()),
        Err(refused) => refused,
    };
    let run = site.run.run_id();
    let started = Instant::now();
    let waited = match (max_wait, refused.retry_after()) {
        // Not a refusal that waiting could cure (a cost the limiter can never hold).
        (_, None) => Err(refused),
        (Some(max), Some(_)) if max.is_zero() => Err(refused),
        (None, Some(_)) => limiter.acquire().await,
        (Some(max), Some(_)) => match tokio::time::timeout(max, limiter.acquire()).await {
            Ok(admitted) => admitted,
            Err(_) => Err(CanoError::rate_limited(
                limiter.available_in(1),
                format!(
                    "rate limiter `{}` did not admit the attempt within {max:?}",
                    limiter.name()
                ),
            )
            .with_hint("raise TaskConfig::with_max_throttle_wait, or the limiter's rate")),
        },
    };
    let elapsed = started.elapsed();
    let admitted = waited.is_ok();
    site.tell(|o, s, t| o.throttled(run, s, t, limiter.name(), elapsed, admitted));
    waited.map_err(|e| e.at(site.state, site.task))
}
