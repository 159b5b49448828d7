//! # cano-saga
//!
//! Sagas for cano workflows. A step that changes an outside system (reserve stock,
//! charge a card) cannot be rolled back by a database transaction; a saga undoes it
//! instead, with a compensating action, when a later step fails.
//!
//! Implement [`CompensatableTask`] for such a step and register it with
//! [`SagaExt::register_with_compensation`]. Each run keeps a stack of the steps it
//! completed, each with the output its `run` returned. If a later state fails (its task
//! errs or panics, an attempt or the workflow times out, the run is cancelled, a state
//! has no handler, a checkpoint cannot be written), the run rolls back: each completed
//! step's `compensate` runs, newest first, before the error is returned.
//!
//! - A clean rollback returns the original error (and, with a checkpoint store, clears
//!   the run's log: there is nothing left to resume).
//! - If a compensation fails after its retries, panics or hangs past the rollback's time
//!   bound ([`Workflow::with_compensation_timeout`](cano_core::Workflow::with_compensation_timeout)),
//!   the rollback goes on with the others and the run fails with
//!   [`CanoError::CompensationFailed`], which carries the original error and every
//!   compensation error. With a checkpoint store the steps not undone stay recorded, and
//!   `Workflow::resume_from(run)` finishes the rollback once the cause is fixed.
//! - With a checkpoint store, outputs are saved with the run: a run resumed after a
//!   crash still compensates the steps completed before it, and a rollback cut short by
//!   a crash resumes where it stopped (a compensation whose success was recorded is not
//!   run again).
//!
//! A rollback is not stopped by the run's cancellation or workflow timeout (either may
//! be what started it); its own time bound is what limits it. A step is undone only
//! once it has completed: make each step atomic (or idempotent by id), since a crash
//! or a cancellation in the middle of one leaves nothing on the stack for it.
//!
//! Observers hear of each compensation through `compensation_started`,
//! `compensation_succeeded` and `compensation_failed`.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use cano_core::{CanoError, Resources, Task, TaskResult, Workflow};
//! use cano_saga::{CompensatableTask, SagaExt};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Order { Reserve, Charge, Ship, Done }
//!
//! // What the outside world holds: stock reserved and money taken.
//! #[derive(Default)]
//! struct World { reserved: u32, charged: u32 }
//!
//! struct Reserve(Arc<Mutex<World>>);
//! #[async_trait::async_trait]
//! impl CompensatableTask<Order> for Reserve {
//!     type Output = u32; // how many items were reserved
//!     async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, u32), CanoError> {
//!         self.0.lock().unwrap().reserved += 2;
//!         Ok((TaskResult::Single(Order::Charge), 2))
//!     }
//!     async fn compensate(&self, _: &Resources, items: u32) -> Result<(), CanoError> {
//!         self.0.lock().unwrap().reserved -= items;
//!         Ok(())
//!     }
//! }
//!
//! struct Charge(Arc<Mutex<World>>);
//! #[async_trait::async_trait]
//! impl CompensatableTask<Order> for Charge {
//!     type Output = u32; // the amount charged
//!     async fn run(&self, _: &Resources) -> Result<(TaskResult<Order>, u32), CanoError> {
//!         self.0.lock().unwrap().charged += 40;
//!         Ok((TaskResult::Single(Order::Ship), 40))
//!     }
//!     async fn compensate(&self, _: &Resources, amount: u32) -> Result<(), CanoError> {
//!         self.0.lock().unwrap().charged -= amount;
//!         Ok(())
//!     }
//! }
//!
//! struct Ship;
//! #[async_trait::async_trait]
//! impl Task<Order> for Ship {
//!     fn config(&self) -> cano_core::TaskConfig {
//!         cano_core::TaskConfig::minimal()
//!     }
//!     async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
//!         Err(CanoError::task_execution("no carrier available"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let world = Arc::new(Mutex::new(World::default()));
//! let workflow = Workflow::bare()
//!     .register_with_compensation(Order::Reserve, Reserve(world.clone()))
//!     .register_with_compensation(Order::Charge, Charge(world.clone()))
//!     .register(Order::Ship, Ship)
//!     .add_exit_state(Order::Done);
//!
//! let err = workflow.orchestrate(Order::Reserve).await.unwrap_err();
//! // The original error comes back, and both steps were undone.
//! assert!(err.to_string().contains("no carrier available"));
//! let world = world.lock().unwrap();
//! assert_eq!((world.reserved, world.charged), (0, 0));
//! # }
//! ```

mod erased;
mod handler;
mod task;

pub use erased::{CompensateFuture, ErasedCompensatable, ForwardRunFuture};
pub use handler::SagaExt;
pub use task::{CompensatableTask, default_compensation_config};

/// Re-exported for matching on a failed rollback.
pub use cano_core::error::{CanoError, CompensationFailure};
