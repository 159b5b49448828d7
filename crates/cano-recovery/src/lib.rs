//! # cano-recovery
//!
//! Crash recovery for cano workflows. The engine (in `cano-core`) writes a checkpoint
//! row each time a run enters a state, through the narrow
//! [`CheckpointStore`](cano_core::CheckpointStore) trait; this crate has the backends and
//! the pieces built on them:
//!
//! - [`SledCheckpointStore`]: the embedded default, one directory, no server. A writer
//!   thread keeps I/O off tokio's workers and shares each flush among the runs writing
//!   at that moment; [`Durability`] says what a crash can cost.
//! - [`MemoryCheckpointStore`]: the same rules in memory, for tests.
//! - [`codec`]: the on-disk row format, a version byte before bincode, so rows written
//!   by an older build always read.
//! - [`SteppedTask`]: work in steps from a saved cursor, registered with
//!   [`register_stepped`](SteppedWorkflow::register_stepped).
//!
//! A run that stops (a crash, or here an error) is continued with
//! `Workflow::resume_from(run_id)`: the state it was in runs again, with the durable
//! data it had saved, and the states before it do not.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use cano_core::checkpoint::DurableStore;
//! use cano_core::{CanoError, RunId, RunOptions, Task, TaskConfig, TaskResult, Workflow};
//! use cano_recovery::MemoryCheckpointStore;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! enum Job { Extract, Load, Done }
//!
//! struct Extract;
//! #[async_trait::async_trait]
//! impl Task<Job> for Extract {
//!     async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
//!         DurableStore::current()?.put("rows", &vec![1u32, 2, 3])?;
//!         Ok(TaskResult::Single(Job::Load))
//!     }
//! }
//!
//! static DATABASE_UP: AtomicBool = AtomicBool::new(false);
//! struct Load;
//! #[async_trait::async_trait]
//! impl Task<Job> for Load {
//!     fn config(&self) -> TaskConfig { TaskConfig::minimal() }
//!     async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
//!         if !DATABASE_UP.load(Ordering::SeqCst) {
//!             return Err(CanoError::task_execution("database unreachable"));
//!         }
//!         let rows: Vec<u32> = DurableStore::current()?.get("rows")?;
//!         assert_eq!(rows, [1, 2, 3]); // saved by Extract, read back from the log
//!         Ok(TaskResult::Single(Job::Done))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CanoError> {
//! let workflow = Workflow::bare()
//!     .register(Job::Extract, Extract)
//!     .register(Job::Load, Load)
//!     .add_exit_state(Job::Done)
//!     .with_checkpoint_store(MemoryCheckpointStore::new())
//!     .with_workflow_id("nightly-import");
//!
//! let run = RunId::new();
//! let first = workflow.orchestrate_with(Job::Extract, RunOptions::new().with_run_id(run)).await;
//! assert!(first.is_err());
//! assert_eq!(workflow.unfinished_runs().await?.len(), 1);
//!
//! DATABASE_UP.store(true, Ordering::SeqCst);
//! assert_eq!(workflow.resume_from(run).await?, Job::Done); // Extract does not run again
//! assert!(workflow.unfinished_runs().await?.is_empty());
//! # Ok(())
//! # }
//! ```

pub mod codec;
mod memory;
mod sled;
mod stepped;

pub use memory::MemoryCheckpointStore;
pub use sled::{Durability, SledCheckpointStore, SledStats};
pub use stepped::{
    DefaultStepCursor, DynSteppedTask, StepOutcome, SteppedTask, SteppedTaskObject,
    SteppedWorkflow, run_stepped,
};
