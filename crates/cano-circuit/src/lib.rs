//! # cano-circuit
//!
//! Admission control: whether a call to a dependency may go ahead at all. A
//! [`CircuitBreaker`] stops calling a dependency that keeps failing and probes it back
//! to health; a [`RateLimiter`] paces calls to one that must not be called too often.
//! Retrying a call that did go ahead is `cano-retry`'s business.
//!
//! Both are plain values to share with an `Arc`, usable without a workflow. In a cano
//! workflow, attach them to a task's `TaskConfig` (`with_circuit_breaker`,
//! `with_rate_limiter`) and the engine asks them before every attempt, or put them in
//! the workflow's `Resources` for tasks to use by hand.
//!
//! ```
//! use std::time::Duration;
//! use cano_circuit::{CircuitBreaker, CircuitPolicy, CircuitState, RateLimiter};
//! use cano_error::CanoError;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), CanoError> {
//! let breaker = CircuitBreaker::named("inventory", CircuitPolicy {
//!     failure_threshold: 3,
//!     reset_timeout: Duration::from_secs(10),
//!     half_open_max_calls: 1,
//! });
//! let limiter = RateLimiter::token_bucket(100, Duration::from_secs(1), 10)?;
//!
//! limiter.acquire().await?;
//! let stock = breaker.call(|| async { Ok::<u32, CanoError>(7) }).await?;
//! assert_eq!(stock, 7);
//! assert_eq!(breaker.state(), CircuitState::Closed);
//! # Ok(())
//! # }
//! ```

mod breaker;
mod clock;
mod limiter;
mod policy;
mod refusal;
mod window;

pub use breaker::{CircuitBreaker, CircuitState, Permit};
pub use limiter::RateLimiter;
pub use policy::{BreakerPolicy, CircuitPolicy, Classifier, TripRule};
pub use refusal::Refusal;
