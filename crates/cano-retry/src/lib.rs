//! # cano-retry
//!
//! How to try an async operation again. This crate knows nothing about workflows: it
//! offers a [`RetryMode`] (none, fixed delay, exponential backoff with jitter), a
//! per-attempt timeout, and [`Retry`], a loop that drives any `FnMut() -> Future` until
//! it succeeds, fails with an error the classifier calls permanent, or runs out of
//! attempts.
//!
//! ```
//! use std::time::Duration;
//! use cano_retry::{Retry, RetryError, RetryMode};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut calls = 0;
//! let outcome: Result<u32, RetryError<&str>> = Retry::new(RetryMode::fixed(3, Duration::from_micros(50)))
//!     .run(|| {
//!         calls += 1;
//!         let n = calls;
//!         async move { if n < 3 { Err("flaky") } else { Ok(n) } }
//!     })
//!     .await;
//! assert_eq!(outcome.unwrap(), 3);
//! # }
//! ```
//!
//! Errors can be classified: a classifier returning [`ErrorClass::Permanent`] stops the
//! loop at once (a validation error will not pass on the next attempt). Timeouts of an
//! attempt are always retryable. Pauses use tokio's timer, so tests on tokio's paused
//! clock run them without waiting.

mod jitter;
mod mode;
mod run;

pub use mode::RetryMode;
pub use run::{AttemptError, ErrorClass, Retry, RetryError, RetryEvent};
