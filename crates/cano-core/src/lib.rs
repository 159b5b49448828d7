//! # cano-core
//!
//! The engine of cano: a workflow is a finite state machine whose states are your enum
//! and whose transitions are chosen by the task registered for each state.
//!
//! Most users depend on the `cano` facade and write `use cano::prelude::*`; this crate
//! is what the facade re-exports, and what extension crates build on through
//! [`StateHandler`] and [`RunObserver`].
//!
//! ```
//! use cano_core::{CanoError, MemoryStore, Resources, Task, TaskResult, Workflow};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Order { Validate, Charge, Done, Rejected }
//!
//! struct Validate;
//! #[async_trait::async_trait]
//! impl Task<Order> for Validate {
//!     async fn run(&self, res: &Resources) -> Result<TaskResult<Order>, CanoError> {
//!         let amount: u32 = res.get::<MemoryStore, _>("store")?.get("amount")?;
//!         Ok(TaskResult::Single(if amount > 0 { Order::Charge } else { Order::Rejected }))
//!     }
//! }
//!
//! struct Charge;
//! #[async_trait::async_trait]
//! impl Task<Order> for Charge {
//!     async fn run_bare(&self) -> Result<TaskResult<Order>, CanoError> {
//!         Ok(TaskResult::Single(Order::Done))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CanoError> {
//! let store = MemoryStore::new();
//! store.put("amount", 42u32)?;
//! let workflow = Workflow::new(Resources::new().insert("store", store))
//!     .register(Order::Validate, Validate)
//!     .register(Order::Charge, Charge)
//!     .add_exit_states([Order::Done, Order::Rejected]);
//! assert_eq!(workflow.orchestrate(Order::Validate).await?, Order::Done);
//! # Ok(())
//! # }
//! ```

/// Errors, re-exported from `cano-error` (every cano crate shares the one type).
pub mod error {
    pub use cano_error::*;
}
pub mod checkpoint;
pub mod hash;
pub mod many;
pub mod node;
pub mod observer;
pub mod resource;
mod retries;
pub mod router;
pub mod run;
mod run_id;
mod spans;
pub mod store;
pub mod task;
mod util;
pub mod wait;
pub mod workflow;

pub use checkpoint::{
    CheckpointRow, CheckpointStore, DurableStore, Retention, RowKind, RunStatus, RunSummary,
    TaskProgress,
};
pub use error::{BoxError, CanoError, CanoResult, ErrorDetail};
pub use node::Node;
pub use observer::{Interest, ObserverArc, Observers, RunObserver, WorkflowObserver};
pub use resource::{DefaultKey, HealthStatus, Resource, ResourceKey, Resources};
pub use retries::run_with_retries;
pub use router::{DynRouterTask, RouterTask, RouterTaskObject};
pub use run::{CancellationToken, DrainGuard, RunContext, RunId, RunOptions};
pub use store::MemoryStore;
pub use task::{DynTask, RegisteredTask, Task, TaskConfig, TaskFuture, TaskObject, TaskResult};
pub use util::short_type_name;
pub use workflow::handler::{
    CompensationFuture, HandlerFuture, HandlerInfo, SignalInfo, StateContext, StateEntry,
    StateHandler, TaskEnv,
};
pub use workflow::{
    IntoCheckpointing, ResourceLifecycle, RunHandle, RunRef, Workflow, WorkflowState,
};

/// The retry policy types, re-exported from `cano-retry`.
pub use cano_retry::{Retry, RetryMode};

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}
