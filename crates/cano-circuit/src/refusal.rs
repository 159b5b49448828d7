//! [`Refusal`]: why a breaker refused a call, in the breaker's own words, for code
//! that uses it without a workflow. It converts into the engine's
//! [`CanoError::CircuitOpen`] (or `Configuration`), which
//! [`CircuitBreaker::try_acquire`](crate::CircuitBreaker::try_acquire) returns.

use std::time::{Duration, Instant};

use cano_error::CanoError;

/// Why [`CircuitBreaker::try_admit`](crate::CircuitBreaker::try_admit) refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The breaker is open: calls are refused until `until`.
    #[error("circuit breaker `{name}` is open: calls are refused for another {remaining:?}")]
    Open {
        /// The breaker's name.
        name: String,
        /// When its reset timeout ends (the next call after it is the first probe).
        until: Instant,
        /// How long that is from when the call was refused.
        remaining: Duration,
    },
    /// The breaker is half-open and as many probe calls as its policy allows are
    /// still running.
    #[error(
        "circuit breaker `{name}` is half-open and its {in_flight} probe call(s) are still running; this call is refused until they report"
    )]
    ProbesBusy {
        /// The breaker's name.
        name: String,
        /// Probe calls running.
        in_flight: u32,
    },
    /// The breaker's policy has mistakes, so it refuses every call.
    #[error("circuit breaker `{name}` is misconfigured: {reason}")]
    Misconfigured {
        /// The breaker's name.
        name: String,
        /// The mistakes, as `CircuitBreaker::check` reports them.
        reason: String,
    },
}

impl Refusal {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Open { .. } => {
                "wait for the breaker's reset timeout or fix the failing dependency; attempts refused by an open breaker do not use up retries"
            }
            Self::ProbesBusy { .. } => {
                "retry after the probes finish, or allow more probes (half_open_max_calls)"
            }
            Self::Misconfigured { .. } => {
                "fix the breaker's policy (CircuitBreaker::try_new says what is wrong)"
            }
        }
    }
}

impl From<Refusal> for CanoError {
    fn from(refusal: Refusal) -> Self {
        let hint = refusal.hint();
        match refusal {
            Refusal::Misconfigured { reason, .. } => CanoError::configuration(reason),
            other => CanoError::circuit_open(other.to_string()),
        }
        .with_hint(hint)
    }
}
