//! When a breaker opens, how long it stays open, and how it probes its way closed
//! again: [`CircuitPolicy`], cano 0.13's three public fields, and [`BreakerPolicy`], the
//! full set (a failure-rate rule, separate probe and close counts, a classifier). A
//! `CircuitPolicy` converts into the `BreakerPolicy` that means the same.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cano_error::CanoError;

/// What opens a closed breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TripRule {
    /// Opens after this many failures in a row (a success resets the count).
    Consecutive {
        /// Failures in a row that open the breaker; at least 1.
        threshold: u32,
    },
    /// Opens when, over the last `window`, at least `min_calls` calls were recorded and
    /// the share of failures among them reached `rate`.
    FailureRate {
        /// Failure share in (0, 1] that opens the breaker.
        rate: f64,
        /// Calls the window must hold before the rate is trusted; at least 1.
        min_calls: u32,
        /// How far back calls count; longer than zero.
        window: Duration,
    },
}

/// Decides whether an error says something about the guarded dependency's health.
pub type Classifier = Arc<dyn Fn(&CanoError) -> bool + Send + Sync>;

/// The simple policy, as cano 0.13 spelled it: open after `failure_threshold` failures
/// in a row, stay open `reset_timeout`, then let `half_open_max_calls` probes through
/// at once and close once that many succeeded (one failed probe reopens).
///
/// ```
/// use std::time::Duration;
/// use cano_circuit::{CircuitBreaker, CircuitPolicy, CircuitState};
///
/// let breaker = CircuitBreaker::new(CircuitPolicy {
///     failure_threshold: 3,
///     ..Default::default()
/// });
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// assert_eq!(breaker.policy().reset_timeout, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircuitPolicy {
    /// Failures in a row that open a closed breaker; at least 1.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets a probe through.
    pub reset_timeout: Duration,
    /// Probe calls allowed at once while half-open, and probe successes that close
    /// the breaker; at least 1.
    pub half_open_max_calls: u32,
}

impl Default for CircuitPolicy {
    /// 5 failures in a row, 30 s open, 1 probe.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
        }
    }
}

impl From<CircuitPolicy> for BreakerPolicy {
    fn from(policy: CircuitPolicy) -> Self {
        BreakerPolicy::consecutive(policy.failure_threshold, policy.reset_timeout)
            .with_half_open_probes(policy.half_open_max_calls)
            .with_successes_to_close(policy.half_open_max_calls)
    }
}

/// Everything a [`CircuitBreaker`](crate::CircuitBreaker) can be told: what opens it
/// ([`TripRule`]), how long it stays open, how many probes run at once and how many
/// must succeed, and which errors count against the dependency.
///
/// ```
/// use std::time::Duration;
/// use cano_circuit::BreakerPolicy;
///
/// // Open after 5 failures in a row; after 30 s let 2 probes through at once and
/// // close after 3 of them succeeded.
/// let policy = BreakerPolicy::consecutive(5, Duration::from_secs(30))
///     .with_half_open_probes(2)
///     .with_successes_to_close(3);
/// assert_eq!(policy.reset_timeout(), Duration::from_secs(30));
/// ```
#[derive(Clone)]
pub struct BreakerPolicy {
    pub(crate) rule: TripRule,
    pub(crate) reset_timeout: Duration,
    pub(crate) half_open_probes: u32,
    pub(crate) successes_to_close: u32,
    pub(crate) classifier: Option<Classifier>,
}

impl Default for BreakerPolicy {
    /// Opens after 5 consecutive failures, stays open 30 s, then lets one probe through
    /// and closes when it succeeds.
    fn default() -> Self {
        Self::consecutive(5, Duration::from_secs(30))
    }
}

impl BreakerPolicy {
    /// Opens after `threshold` failures in a row and stays open for `reset_timeout`.
    pub fn consecutive(threshold: u32, reset_timeout: Duration) -> Self {
        Self::with_rule(TripRule::Consecutive { threshold }, reset_timeout)
    }

    /// Opens when, over the last `window`, at least `min_calls` calls were made and the
    /// share of failures reached `rate`; stays open for `reset_timeout`.
    pub fn failure_rate(
        rate: f64,
        min_calls: u32,
        window: Duration,
        reset_timeout: Duration,
    ) -> Self {
        Self::with_rule(
            TripRule::FailureRate {
                rate,
                min_calls,
                window,
            },
            reset_timeout,
        )
    }

    fn with_rule(rule: TripRule, reset_timeout: Duration) -> Self {
        Self {
            rule,
            reset_timeout,
            half_open_probes: 1,
            successes_to_close: 1,
            classifier: None,
        }
    }

    /// How many probe calls may run at once while half-open (default 1).
    pub fn with_half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// How many probes must succeed before the breaker closes (default 1).
    pub fn with_successes_to_close(mut self, successes: u32) -> Self {
        self.successes_to_close = successes;
        self
    }

    /// Decides which errors count against the dependency: `counts(error)` returning
    /// `false` (a validation error, say) leaves the breaker as it was.
    ///
    /// Without a classifier, every error counts except configuration, workflow and
    /// cancellation errors and the breaker's and rate limiters' own refusals, none of
    /// which say anything about the dependency.
    pub fn with_classifier(
        mut self,
        counts: impl Fn(&CanoError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(Arc::new(counts));
        self
    }

    /// What opens the breaker.
    pub fn rule(&self) -> TripRule {
        self.rule
    }

    /// How long the breaker stays open before it lets a probe through.
    pub fn reset_timeout(&self) -> Duration {
        self.reset_timeout
    }

    /// Probe calls allowed at once while half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// Probe successes that close the breaker.
    pub fn successes_to_close(&self) -> u32 {
        self.successes_to_close
    }

    /// Whether `error` counts as a failure of the guarded dependency.
    pub fn counts(&self, error: &CanoError) -> bool {
        match &self.classifier {
            Some(counts) => counts(error),
            None => !matches!(
                error,
                CanoError::Configuration(_)
                    | CanoError::Workflow(_)
                    | CanoError::Cancelled(_)
                    | CanoError::CircuitOpen(_)
                    | CanoError::RateLimited { .. }
            ),
        }
    }

    /// Every mistake in the policy, as a `Configuration` error naming the setting.
    pub(crate) fn check(&self, name: &str) -> Result<(), CanoError> {
        let mut problems = Vec::new();
        match self.rule {
            TripRule::Consecutive { threshold: 0 } => {
                problems.push("the failure threshold is 0 (it would open without any failure); use at least 1".to_owned());
            }
            TripRule::Consecutive { .. } => {}
            TripRule::FailureRate {
                rate,
                min_calls,
                window,
            } => {
                if !(rate > 0.0 && rate <= 1.0) {
                    problems.push(format!(
                        "the failure rate {rate} is outside (0, 1]; use e.g. 0.5 for half the calls"
                    ));
                }
                if min_calls == 0 {
                    problems.push(
                        "min_calls is 0; use at least 1 so one call cannot decide the rate"
                            .to_owned(),
                    );
                }
                if window.is_zero() {
                    problems.push(
                        "the rolling window is empty (0 s); give it a length such as 10 s"
                            .to_owned(),
                    );
                }
            }
        }
        if self.half_open_probes == 0 {
            problems.push(
                "half_open_probes is 0, so a half-open breaker could never close; use at least 1"
                    .to_owned(),
            );
        }
        if self.successes_to_close == 0 {
            problems.push("successes_to_close is 0; use at least 1".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CanoError::configuration(format!(
                "circuit breaker `{name}`: {}",
                problems.join("; ")
            ))
            .with_hint("fix the policy passed to CircuitBreaker::new (CircuitBreaker::try_new reports this when the breaker is built)")
            .permanent())
        }
    }
}

impl BreakerPolicy {
    /// The same policy in cano 0.13's three fields, as near as they can say it: a
    /// failure-rate rule shows its `min_calls` as the threshold.
    pub(crate) fn simple(&self) -> CircuitPolicy {
        CircuitPolicy {
            failure_threshold: match self.rule {
                TripRule::Consecutive { threshold } => threshold,
                TripRule::FailureRate { min_calls, .. } => min_calls,
            },
            reset_timeout: self.reset_timeout,
            half_open_max_calls: self.half_open_probes,
        }
    }
}

impl fmt::Debug for BreakerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPolicy")
            .field("rule", &self.rule)
            .field("reset_timeout", &self.reset_timeout)
            .field("half_open_probes", &self.half_open_probes)
            .field("successes_to_close", &self.successes_to_close)
            .field("classifier", &self.classifier.as_ref().map(|_| "custom"))
            .finish()
    }
}
