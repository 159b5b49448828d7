//! # cano-split
//!
//! Parallel states for cano workflows. A state registered with
//! [`register_split`](SplitExt::register_split) runs several tasks at once and moves to
//! its join state as soon as its [`JoinStrategy`] is satisfied, cancelling the branches
//! it no longer needs.
//!
//! - Strategies: [`All`](JoinStrategy::All), [`Any`](JoinStrategy::Any),
//!   [`Quorum(n)`](JoinStrategy::Quorum), [`Percentage(p)`](JoinStrategy::Percentage),
//!   [`PartialResults(min)`](JoinStrategy::PartialResults),
//!   [`PartialTimeout`](JoinStrategy::PartialTimeout).
//! - Each branch is a task with its own `TaskConfig`: retried, bounded by its attempt
//!   timeout, a panic caught as its failure. Branches run on the tokio runtime's worker
//!   threads.
//! - [`JoinConfig::with_timeout`] bounds the split, [`JoinConfig::with_bulkhead`] the
//!   number of branches running at once.
//! - The next state reads what every branch did from the [`SplitResult`].
//! - [`register_dynamic_split`](SplitExt::register_dynamic_split) decides the branches
//!   at run time (one per input item); [`Branches`] mixes task types in one split.
//!
//! ```
//! use std::time::Duration;
//! use cano_core::{CanoError, MemoryStore, Resources, Task, TaskResult, Workflow};
//! use cano_split::{JoinConfig, JoinStrategy, SplitExt, SplitResult};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Ask, Decide, Done }
//!
//! struct Replica { latency_ms: u64 }
//! #[async_trait::async_trait]
//! impl Task<Step> for Replica {
//!     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
//!         tokio::time::sleep(Duration::from_millis(self.latency_ms)).await;
//!         Ok(TaskResult::Single(Step::Decide))
//!     }
//! }
//!
//! struct Decide;
//! #[async_trait::async_trait]
//! impl Task<Step> for Decide {
//!     async fn run(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
//!         let asked = SplitResult::<Step>::of(&Step::Ask)?;
//!         let answered: Vec<usize> = asked.succeeded().map(|(i, _)| i).collect();
//!         res.get::<MemoryStore, _>("store")?.put("answered", answered)?;
//!         Ok(TaskResult::Single(Step::Done))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), CanoError> {
//! let store = MemoryStore::new();
//! let replicas = vec![
//!     Replica { latency_ms: 30 },
//!     Replica { latency_ms: 10 },
//!     Replica { latency_ms: 500 },
//! ];
//! let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
//!     // Two answers are enough; the slow replica is cancelled.
//!     .register_split(Step::Ask, replicas, JoinConfig::new(JoinStrategy::Quorum(2), Step::Decide))
//!     .register(Step::Decide, Decide)
//!     .add_exit_state(Step::Done);
//!
//! assert_eq!(workflow.orchestrate(Step::Ask).await?, Step::Done);
//! assert_eq!(store.get::<Vec<usize>>("answered")?, vec![0, 1]);
//! # Ok(())
//! # }
//! ```

mod branches;
mod config;
mod join;
mod result;
mod strategy;

use std::panic::{RefUnwindSafe, UnwindSafe};

use cano_core::{CanoError, ResourceKey, Resources, Workflow, WorkflowState};

pub use branches::{Branches, IntoBranches};
pub use config::JoinConfig;
pub use result::{BranchOutcome, BranchReport, SplitResult, SplitTaskResult};
pub use strategy::{JoinStrategy, Tally, Verdict};

use join::{Source, SplitHandler};

/// Split states on the [`Workflow`] builder. `use cano::prelude::*` brings it in, so
/// `Workflow::new(..).register_split(..)` reads as one builder.
pub trait SplitExt<S, K>: Sized {
    /// Runs `tasks` in parallel whenever the workflow enters `state`, and moves to
    /// `config`'s join state once its strategy is satisfied.
    ///
    /// The tasks' own returned states are not followed (the join state is); they are
    /// kept in the [`SplitResult`]. A task returning `TaskResult::Split` is fine here.
    #[must_use = "builder methods return the updated workflow; a discarded one loses the change"]
    fn register_split<B: IntoBranches<S, K>>(
        self,
        state: S,
        tasks: B,
        config: JoinConfig<S>,
    ) -> Self;

    /// Like [`register_split`](Self::register_split), with the branches decided on
    /// every run by `plan` from the workflow's resources: for example one branch per
    /// item an earlier state put in the store.
    ///
    /// Checks that need the branch count (a quorum larger than the fan-out) happen at
    /// run time, as a `Configuration` error naming the state. An empty fan-out proceeds
    /// at once under `All`, `Percentage` and `PartialTimeout`, and is an error under
    /// `Any`, `Quorum` and `PartialResults`.
    #[must_use = "builder methods return the updated workflow; a discarded one loses the change"]
    fn register_dynamic_split<F, B>(self, state: S, plan: F, config: JoinConfig<S>) -> Self
    where
        F: Fn(&Resources<K>) -> Result<B, CanoError> + Send + Sync + 'static,
        B: IntoBranches<S, K>;
}

impl<S: WorkflowState, K: ResourceKey> SplitExt<S, K> for Workflow<S, K> {
    fn register_split<B: IntoBranches<S, K>>(
        self,
        state: S,
        tasks: B,
        config: JoinConfig<S>,
    ) -> Self {
        let tasks = tasks.into_branches().tasks.into();
        let output_key = result::key(&state);
        self.register_handler(
            state,
            SplitHandler {
                source: Source::Fixed(tasks),
                config,
                output_key,
            },
        )
    }

    fn register_dynamic_split<F, B>(self, state: S, plan: F, config: JoinConfig<S>) -> Self
    where
        F: Fn(&Resources<K>) -> Result<B, CanoError> + Send + Sync + 'static,
        B: IntoBranches<S, K>,
    {
        let plan = move |res: &Resources<K>| plan(res).map(IntoBranches::into_branches);
        let output_key = result::key(&state);
        self.register_handler(
            state,
            SplitHandler {
                source: Source::Planned(Box::new(plan)),
                config,
                output_key,
            },
        )
    }
}

// The split's public types can cross threads and unwind boundaries like the rest of cano.
const _: () = {
    const fn assert_traits<T: Send + Sync + UnwindSafe + RefUnwindSafe>() {}
    assert_traits::<JoinConfig<u8>>();
    assert_traits::<JoinStrategy>();
};
