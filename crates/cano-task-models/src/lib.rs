//! # cano-task-models
//!
//! Task models for [cano](https://docs.rs/cano) workflows beyond the plain `Task`: each
//! is a trait with one job, and its macro (`#[task::poll]`, `#[task::batch]`,
//! `#[task::timer]`, `#[task::stream]` in the facade) turns an implementation into a
//! `Task`, registered with `Workflow::register` like any other.
//!
//! | model | what the engine does for you |
//! |---|---|
//! | [`PollTask`] | calls `poll` until it is ready, pausing as asked; an error budget and a maximum wait |
//! | [`BatchTask`] | `load`s items, processes them with a concurrency limit and per-item retries, hands every result in load order to `finish` |
//! | [`TimerTask`] | waits for a duration or a wall-clock moment, then `fire`s |
//! | [`StreamTask`] | reads a stream in windows (by count or by age) and `flush`es each |
//!
//! With a checkpoint store attached to the workflow, the models that make progress
//! inside a state save it ([`TaskProgress`](cano_core::TaskProgress)): a batch its
//! finished items, a timer its deadline, a stream its cursor after each window. A run
//! resumed after a crash carries on from there.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use cano_core::{CanoError, Resources, Task, TaskConfig, TaskFuture, TaskResult, Workflow};
//! use cano_task_models::{PollOutcome, PollTask, run_poll};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Export { Wait, Download }
//!
//! /// Ready on the third look.
//! struct ExportJob(AtomicU32);
//!
//! #[async_trait::async_trait]
//! impl PollTask<Export> for ExportJob {
//!     async fn poll(&self, _res: &Resources) -> Result<PollOutcome<Export>, CanoError> {
//!         Ok(match self.0.fetch_add(1, Ordering::Relaxed) {
//!             0 | 1 => PollOutcome::pending(Duration::from_secs(5)),
//!             _ => PollOutcome::ready(Export::Download),
//!         })
//!     }
//! }
//!
//! // What `#[task::poll]` writes for you:
//! impl Task<Export> for ExportJob {
//!     fn run<'a, 'b, 'c>(&'a self, res: &'b Resources) -> TaskFuture<'c, Export>
//!     where 'a: 'c, 'b: 'c, Self: 'c {
//!         Box::pin(run_poll(self, res))
//!     }
//!     fn config(&self) -> TaskConfig {
//!         PollTask::config(self)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), CanoError> {
//! let workflow = Workflow::bare()
//!     .register(Export::Wait, ExportJob(AtomicU32::new(0)))
//!     .add_exit_state(Export::Download);
//! let started = tokio::time::Instant::now();
//! assert_eq!(workflow.orchestrate(Export::Wait).await?, Export::Download);
//! assert_eq!(started.elapsed(), Duration::from_secs(10)); // two pauses of 5 s
//! # Ok(())
//! # }
//! ```

pub mod batch;
pub mod batch_object;
pub mod poll;
pub mod stream;
pub mod timer;
mod util;

pub use batch::{
    BatchConfig, BatchTask, DefaultBatchItem, DefaultBatchItemOutput, ItemCodec, ItemResult,
    run_batch,
};
pub use batch_object::{BatchTaskObject, DynBatchTask};
pub use poll::{
    DynPollTask, PollErrorPolicy, PollOutcome, PollTask, PollTaskObject, run_poll, run_poll_loop,
};
pub use stream::{
    ItemErrorPolicy, ItemStream, StreamConfig, StreamSummary, StreamTask, WindowOutcome, run_stream,
};
pub use timer::{Deadline, TimerTask, run_timer};
