//! # cano-testing
//!
//! A test kit for [cano](https://docs.rs/cano) workflows (facade feature `testing`,
//! as `cano::testing`):
//!
//! - [`RecordingObserver`] keeps every event of every run and asserts the path a run
//!   took ([`assert_path`](RecordingObserver::assert_path)), its outcome, attempts and
//!   retries.
//! - [`FaultyStore`] is a checkpoint store that fails the Nth append, every append from
//!   the Nth on, or every load, and lets a test await the rows written (no sleeping to
//!   find out whether a row is there).
//! - [`FlakyTask`] fails or panics on chosen attempts.
//! - [`run_paused`], [`paused_runtime`] and [`timed`] run on tokio's paused clock, so
//!   retries, timeouts, timers and schedules take no real time and exact virtual time.
//! - [`alloc::CountingAllocator`] counts a thread's heap allocations, to hold a hot
//!   path to its allocation budget.
//!
//! ```
//! use std::time::Duration;
//! use cano_core::{CanoError, RetryMode, TaskConfig, Workflow};
//! use cano_testing::{FlakyTask, RecordingObserver, run_paused};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum S { Fetch, Done }
//!
//! let recorder = RecordingObserver::new();
//! let fetch = FlakyTask::new(S::Done)
//!     .named("fetch")
//!     .failing_on([1])
//!     .panicking_on([2])
//!     .with_config(TaskConfig::new().with_retry(RetryMode::fixed(2, Duration::from_secs(30))));
//! let workflow = Workflow::bare()
//!     .register(S::Fetch, fetch.clone())
//!     .add_exit_state(S::Done)
//!     .with_observer(recorder.clone());
//! let (result, took) = run_paused(workflow.orchestrate(S::Fetch));
//! // The failure is retried after 30 s; the panic is not retried (panics never are).
//! assert!(result.unwrap_err().to_string().contains("injected panic on attempt 2"));
//! assert_eq!((fetch.attempts(), recorder.retries("fetch")), (2, 1));
//! assert_eq!(took, Duration::from_secs(30));
//! ```

pub mod alloc;
mod clock;
mod observer;
mod store;
mod task;

pub use clock::{paused_runtime, run_paused, timed};
pub use observer::{Event, RecordingObserver};
pub use store::FaultyStore;
pub use task::FlakyTask;
