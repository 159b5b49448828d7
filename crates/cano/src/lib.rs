//! # cano: a type-safe async workflow engine
//!
//! A workflow is a finite state machine. Your `enum` is the set of states; each state
//! gets a task; a task returns the next state; the run ends at an exit state. Around
//! that core, cano retries failed attempts, bounds them with timeouts, catches panics,
//! cancels runs on request, and tells observers what happens.
//!
//! ## Quick start
//!
//! ```
//! use cano::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Load, Total, Done }
//!
//! // A typed setting the tasks read from the workflow's resources.
//! struct Settings { count: u32 }
//! #[resource]
//! impl Resource for Settings {}
//!
//! struct Load;
//! #[task]
//! impl Task<Step> for Load {
//!     async fn run(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
//!         let settings = res.get::<Settings, _>("settings")?;
//!         let store = res.get::<MemoryStore, _>("store")?;
//!         store.put("numbers", (1..=settings.count).collect::<Vec<u32>>())?;
//!         Ok(TaskResult::Single(Step::Total))
//!     }
//! }
//!
//! struct Total;
//! #[task]
//! impl Task<Step> for Total {
//!     async fn run(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
//!         let store = res.get::<MemoryStore, _>("store")?;
//!         let numbers: Vec<u32> = store.get("numbers")?;
//!         store.put("total", numbers.iter().sum::<u32>())?;
//!         Ok(TaskResult::Single(Step::Done))
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), CanoError> {
//! let store = MemoryStore::new();
//! let workflow = Workflow::new(
//!     Resources::new()
//!         .insert("settings", Settings { count: 4 })
//!         .insert("store", store.clone()),
//! )
//! .register(Step::Load, Load)
//! .register(Step::Total, Total)
//! .add_exit_state(Step::Done);
//!
//! assert_eq!(workflow.orchestrate(Step::Load).await?, Step::Done);
//! assert_eq!(store.get::<u32>("total")?, 10);
//! # Ok(())
//! # }
//! ```
//!
//! ## Tasks without resources
//!
//! Implement `run_bare` and build the workflow with [`Workflow::bare`]:
//!
//! ```
//! use cano::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Compute, Done }
//!
//! struct Compute;
//! #[task]
//! impl Task<Step> for Compute {
//!     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
//!         Ok(TaskResult::Single(Step::Done))
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), CanoError> {
//! let workflow = Workflow::bare().register(Step::Compute, Compute).add_exit_state(Step::Done);
//! assert_eq!(workflow.orchestrate(Step::Compute).await?, Step::Done);
//! # Ok(())
//! # }
//! ```
//!
//! ## Retries, timeouts, failures
//!
//! A task's [`TaskConfig`] says how it is retried ([`RetryMode`]: none, fixed, or
//! exponential backoff with jitter) and how long one attempt may take. The default is
//! three retries with exponential backoff from 100 ms; errors that cannot pass on a
//! retry (configuration errors, errors marked [`CanoError::permanent`], panics) are
//! not retried. A panicking task fails its run with
//! `CanoError::TaskExecution("panic: ...")`; the process goes on.
//!
//! Every [`CanoError`] names the state and the task and says how to fix it; your own
//! error type is kept as its `source()` ([`CanoError::task`],
//! [`CanoError::downcast_ref`]).
//!
//! ## Circuit breakers and rate limits
//!
//! Admission comes before retries. [`TaskConfig::with_circuit_breaker`] guards every
//! attempt with a shared [`CircuitBreaker`]: once the dependency has failed often
//! enough ([`CircuitPolicy`]: failures in a row, or a failure rate over a rolling
//! window) the breaker opens and attempts fail at once with [`CanoError::CircuitOpen`],
//! without spending retries; after its reset timeout, probe calls decide whether it
//! closes again. [`TaskConfig::with_rate_limiter`] paces every attempt with a shared
//! [`RateLimiter`] (token bucket, fixed window, or several tiers at once); bounded with
//! [`TaskConfig::with_max_throttle_wait`], an attempt that would wait too long fails
//! with [`CanoError::RateLimited`] instead.
//!
//! ```
//! use std::sync::Arc;
//! use cano::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Fetch, Done }
//!
//! struct Fetch { breaker: Arc<CircuitBreaker> }
//! #[task]
//! impl Task<Step> for Fetch {
//!     fn config(&self) -> TaskConfig {
//!         TaskConfig::minimal().with_circuit_breaker(self.breaker.clone())
//!     }
//!     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
//!         Err(CanoError::task_execution("upstream returned 503"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CanoError> {
//! let breaker = Arc::new(CircuitBreaker::named(
//!     "upstream",
//!     CircuitPolicy { failure_threshold: 2, ..Default::default() },
//! ));
//! let workflow = Workflow::bare()
//!     .register(Step::Fetch, Fetch { breaker: breaker.clone() })
//!     .add_exit_state(Step::Done);
//! for _ in 0..2 {
//!     assert!(matches!(workflow.orchestrate(Step::Fetch).await, Err(CanoError::TaskExecution(_))));
//! }
//! // Two failures in a row opened it: the next run fails fast, the task never runs.
//! assert!(breaker.state().is_open());
//! assert!(matches!(workflow.orchestrate(Step::Fetch).await, Err(CanoError::CircuitOpen(_))));
//! # Ok(())
//! # }
//! ```
//!
//! ## Many runs, cancellation, observers
//!
//! A [`Workflow`] is built once and shared: `orchestrate` takes `&self`, cloning is an
//! `Arc` clone, and every run gets its own [`RunId`]. [`Workflow::spawn`] starts a run
//! and returns a [`RunHandle`] that can cancel it; tasks see the run through
//! [`RunContext::current`]. A [`WorkflowObserver`] (cano 0.13's callbacks, by name)
//! or a [`RunObserver`] (with the run id, the state value and more) receives run,
//! state, task and retry events.
//!
//! ## Parallel states
//!
//! With the `split` feature (on by default), [`SplitExt::register_split`] runs several
//! tasks at once for one state and joins them by a [`JoinStrategy`]: `All`, `Any`,
//! `Quorum(n)`, `Percentage(p)`, `PartialResults(min)` or `PartialTimeout`, with an
//! optional timeout and bulkhead. The next state reads every branch's outcome from the
//! [`SplitResult`]:
//!
//! ```
//! # #[cfg(feature = "split")]
//! # mod example {
//! use cano::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Fetch, Report, Done }
//!
//! struct Source(u32);
//! #[task]
//! impl Task<Step> for Source {
//!     async fn run(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
//!         res.get::<MemoryStore, _>("store")?.put(format!("source_{}", self.0), self.0 * 10)?;
//!         Ok(TaskResult::Single(Step::Report))
//!     }
//! }
//!
//! struct Report;
//! #[task]
//! impl Task<Step> for Report {
//!     async fn run(&self, res: &Resources) -> Result<TaskResult<Step>, CanoError> {
//!         let fetched = SplitResult::<Step>::of(&Step::Fetch)?;
//!         res.get::<MemoryStore, _>("store")?.put("sources", fetched.succeeded().count())?;
//!         Ok(TaskResult::Single(Step::Done))
//!     }
//! }
//!
//! # #[tokio::main]
//! # pub async fn main() -> Result<(), CanoError> {
//! let store = MemoryStore::new();
//! let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
//!     .register_split(
//!         Step::Fetch,
//!         vec![Source(1), Source(2), Source(3)],
//!         JoinConfig::new(JoinStrategy::All, Step::Report),
//!     )
//!     .register(Step::Report, Report)
//!     .add_exit_state(Step::Done);
//! workflow.orchestrate(Step::Fetch).await?;
//! assert_eq!(store.get::<usize>("sources")?, 3);
//! assert_eq!(store.get::<u32>("source_2")?, 20);
//! # Ok(())
//! # }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     #[cfg(feature = "split")]
//! #     example::main()?;
//! #     Ok(())
//! # }
//! ```
//!
//! ## Crash recovery
//!
//! Attach a checkpoint store and each run writes a row as it enters a state, before the
//! state's task runs. If the process dies, [`Workflow::resume_from`] continues a run
//! from its last row: the state it was in runs again (so tasks from there on should be
//! idempotent), the states before it do not, and what tasks saved in the run's
//! [`DurableStore`] is back. States are stored by their serde encoding.
//!
//! ```
//! # #[cfg(feature = "recovery")]
//! # mod example {
//! use cano::prelude::*;
//! use cano::DurableStore;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
//! enum Import { Fetch { page: u32 }, Done }
//!
//! struct Fetch;
//! #[task]
//! impl Task<Import> for Fetch {
//!     async fn run_bare(&self) -> Result<TaskResult<Import>, CanoError> {
//!         DurableStore::current()?.put("rows", &120u32)?;
//!         Ok(TaskResult::Single(Import::Done))
//!     }
//! }
//!
//! # #[tokio::main]
//! # pub async fn main() -> Result<(), CanoError> {
//! let dir = tempfile::tempdir().unwrap();
//! let workflow = Workflow::bare()
//!     .register(Import::Fetch { page: 1 }, Fetch)
//!     .add_exit_state(Import::Done)
//!     .with_checkpoint_store(SledCheckpointStore::open(dir.path())?)
//!     .with_workflow_id("import");
//!
//! // At startup: continue whatever the last process left unfinished, then start anew.
//! for (run, outcome) in workflow.resume_interrupted().await? {
//!     println!("resumed {run}: {outcome:?}");
//! }
//! assert_eq!(workflow.orchestrate(Import::Fetch { page: 1 }).await?, Import::Done);
//! # Ok(())
//! # }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     #[cfg(feature = "recovery")]
//! #     example::main()?;
//! #     Ok(())
//! # }
//! ```
//!
//! [`SteppedTask`] does long work in steps whose cursor is saved after each one, so a
//! resumed run goes on from the last step.
//!
//! ## Sagas
//!
//! A step that changes another system (reserve stock, charge a card) cannot be undone
//! by a transaction. Implement [`CompensatableTask`]: its `run` returns the next state
//! and an output, its `compensate` undoes that step given the output. Register it with
//! [`SagaExt::register_with_compensation`]. When a later state fails (an error, a
//! panic, a timeout, a cancellation, a missing handler, a checkpoint that cannot be
//! written), the run rolls back: every completed step is compensated, newest first,
//! each with its own retry policy and all within
//! [`Workflow::with_compensation_timeout`]. A clean rollback returns the original
//! error; otherwise [`CanoError::CompensationFailed`] carries it with every
//! compensation error. With a checkpoint store the outputs are saved with the run, so
//! a resumed run still undoes work done before a crash, and `resume_from` finishes a
//! rollback that a crash or a failed compensation cut short.
//!
//! ```
//! # #[cfg(feature = "saga")]
//! # mod example {
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use std::sync::Arc;
//! use cano::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Pay { Charge, Ship, Done }
//!
//! struct Charge { balance: Arc<AtomicI64> }
//! #[saga::task]
//! impl CompensatableTask<Pay> for Charge {
//!     type Output = i64; // the amount taken
//!     async fn run(&self, _: &Resources) -> Result<(TaskResult<Pay>, i64), CanoError> {
//!         self.balance.fetch_sub(25, Ordering::SeqCst);
//!         Ok((TaskResult::Single(Pay::Ship), 25))
//!     }
//!     async fn compensate(&self, _: &Resources, amount: i64) -> Result<(), CanoError> {
//!         self.balance.fetch_add(amount, Ordering::SeqCst); // refund
//!         Ok(())
//!     }
//! }
//!
//! struct Ship;
//! #[task]
//! impl Task<Pay> for Ship {
//!     fn config(&self) -> TaskConfig { TaskConfig::minimal() }
//!     async fn run_bare(&self) -> Result<TaskResult<Pay>, CanoError> {
//!         Err(CanoError::task_execution("no carrier today"))
//!     }
//! }
//!
//! # #[tokio::main]
//! # pub async fn main() {
//! let balance = Arc::new(AtomicI64::new(100));
//! let workflow = Workflow::bare()
//!     .register_with_compensation(Pay::Charge, Charge { balance: balance.clone() })
//!     .register(Pay::Ship, Ship)
//!     .add_exit_state(Pay::Done);
//! let err = workflow.orchestrate(Pay::Charge).await.unwrap_err();
//! assert!(err.to_string().contains("no carrier today"));
//! assert_eq!(balance.load(Ordering::SeqCst), 100); // refunded
//! # }
//! # }
//! # fn main() {
//! #     #[cfg(feature = "saga")]
//! #     example::main();
//! # }
//! ```
//!
//! ## Task models
//!
//! Some states are not "run once and move on". Each of these models is a trait whose
//! macro also makes it a [`Task`], so it registers with `register`:
//! [`RouterTask`] (`#[task::router]`, or `register_router` to skip its checkpoint
//! row) picks the next state; [`PollTask`] (`#[task::poll]`) waits until something is
//! ready; [`BatchTask`] (`#[task::batch]`) processes a list of items with a
//! concurrency limit and per-item retries; [`TimerTask`] (`#[task::timer]`) waits for a
//! duration or a moment; [`StreamTask`] (`#[task::stream]`) consumes a stream in
//! windows. With a checkpoint store, a batch's finished items, a timer's deadline and a
//! stream's cursor are saved, so a resumed run carries on from there.
//!
//! ```
//! # #[cfg(feature = "task-models")]
//! # mod example {
//! use std::time::Duration;
//! use cano::prelude::*;
//! use cano::Deadline;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Job { Invoice, Remind, Done }
//!
//! #[derive(Clone)]
//! struct Invoice;
//!
//! #[task::batch(state = Job)]
//! impl Invoice {
//!     type Item = u32;
//!     type ItemOutput = u32;
//!
//!     async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
//!         Ok(vec![120, 80, 45])
//!     }
//!     async fn process_item(&self, _res: &Resources, cents: &u32) -> Result<u32, CanoError> {
//!         Ok(cents * 121 / 100) // add VAT
//!     }
//!     async fn finish(
//!         &self,
//!         res: &Resources,
//!         results: Vec<ItemResult<u32>>,
//!     ) -> Result<TaskResult<Job>, CanoError> {
//!         let total: u32 = results.into_iter().sum::<Result<u32, _>>()?;
//!         res.get::<MemoryStore, _>("store")?.put("total", total)?;
//!         Ok(TaskResult::Single(Job::Remind))
//!     }
//! }
//!
//! struct Remind;
//!
//! #[task::timer(state = Job)]
//! impl Remind {
//!     async fn deadline(&self, _res: &Resources) -> Result<Deadline, CanoError> {
//!         Ok(Deadline::After(Duration::from_secs(7 * 24 * 3600)))
//!     }
//!     async fn fire(&self, _res: &Resources) -> Result<TaskResult<Job>, CanoError> {
//!         Ok(TaskResult::Single(Job::Done))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # pub async fn main() -> Result<(), CanoError> {
//! let store = MemoryStore::new();
//! let workflow = Workflow::new(Resources::new().insert("store", store.clone()))
//!     .register(Job::Invoice, Invoice)
//!     .register(Job::Remind, Remind)
//!     .add_exit_state(Job::Done);
//! assert_eq!(workflow.orchestrate(Job::Invoice).await?, Job::Done); // a week, on a paused clock
//! assert_eq!(store.get::<u32>("total")?, 145 + 96 + 54);
//! # Ok(())
//! # }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     #[cfg(feature = "task-models")]
//! #     example::main()?;
//! #     Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! `split` (default) brings the split/join states above; `recovery` (default) brings
//! the checkpoint stores (sled, in-memory) and stepped tasks; `saga` (default) brings
//! compensatable tasks; `task-models` (default) the poll, batch, timer and stream
//! tasks (routers are always there); `testing` the test kit in `cano::testing`;
//! `tracing` a span per run, state and task attempt, and `TracingObserver`, which
//! turns observer events into `tracing` events; `metrics` the `MetricsObserver` and
//! `cano::metrics::describe()`; `scheduler` the `Scheduler` for cron, interval and
//! manual flows; `postgres` running on many machines: the PostgreSQL checkpoint
//! store, the run queue, leased workers and cluster-wide cron (`cano::postgres`).

// On docs.rs, each item gated by a feature says which (nightly rustdoc only).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use cano_core::{error, many, node, resource, run, store, wait};

/// Checkpoints: the full checkpoint store trait a backend implements, its rows, a run's
/// durable data and a task's saved progress. The simple store of cano 0.13 is
/// [`checkpoint::simple`] (and the root's `CheckpointStore`); the engine's own log
/// machinery is in [`ext`].
pub mod checkpoint {
    pub use cano_core::checkpoint::{
        Bincode, CheckpointRow, CheckpointStore, Codec, DataChange, DurableStore, INBOX_LIMIT,
        Retention, RowKind, RunStatus, RunSummary, Sent, Signal, SignalStore, TaskProgress,
        WaitRecord, simple,
    };
}

/// For crates that extend the engine: new kinds of state ([`StateHandler`](ext::StateHandler)),
/// checkpoint backends (the append rule [`check_next_seq`](ext::check_next_seq)), and the
/// engine's log, replay and hashing. What a workflow author uses is at the root and in
/// the prelude; this module is not: it follows the engine's internals and may change
/// in any release, outside the semver promise the rest of the crate keeps.
pub mod ext {
    pub use cano_core::checkpoint::{
        Journal, ResumePoint, StateTag, check_next_seq, check_signal, decode_state, encode_state,
        is_running_here, replay, signal_limit_error, signal_taken_error, until_not_running_here,
    };
    pub use cano_core::hash;
    pub use cano_core::run::RunJournal;
    pub use cano_core::{
        CompensationFuture, HandlerFuture, HandlerInfo, Observers, RegisteredTask, SignalInfo,
        StateContext, StateHandler, TaskEnv, short_type_name,
    };
}

/// Observers: cano 0.13's [`WorkflowObserver`] and the richer [`RunObserver`], with
/// the tracing and metrics observers (the `cano-telemetry` crate) when their features
/// are on.
pub mod observer {
    pub use cano_core::observer::*;
    #[cfg(feature = "metrics")]
    pub use cano_telemetry::MetricsObserver;
    #[cfg(feature = "tracing")]
    pub use cano_telemetry::TracingObserver;
}

/// The workflow: the state machine, its builder and how runs go (cano-core), with the
/// split/join settings and results at cano 0.13's paths.
pub mod workflow {
    pub use cano_core::StateEntry;
    pub use cano_core::many::WaitStrategy;
    pub use cano_core::workflow::*;
    #[cfg(feature = "split")]
    pub use cano_split::{JoinConfig, JoinStrategy, SplitResult, SplitTaskResult};
}

/// Tasks: the [`Task`] trait, its result and its configuration, and the task models
/// built on it, each in its module with its attribute macro of the same name
/// (`#[task::router]`, `#[task::poll]`, `#[task::batch]`, `#[task::timer]`,
/// `#[task::stream]`, `#[task::stepped]`).
pub mod task {
    pub use cano_core::task::*;
    pub use cano_core::{RetryMode, run_with_retries};

    /// Routers: side-effect-free branching, registered with
    /// [`Workflow::register_router`](crate::Workflow::register_router).
    pub mod router {
        pub use cano_core::router::*;
    }
    pub use cano_macros::router;

    /// Poll tasks: wait until something is ready (the `cano-task-models` crate).
    #[cfg(feature = "task-models")]
    pub mod poll {
        pub use cano_task_models::poll::*;
    }
    #[cfg(feature = "task-models")]
    pub use cano_macros::poll;

    /// Batch tasks: process a list of items (the `cano-task-models` crate).
    #[cfg(feature = "task-models")]
    pub mod batch {
        pub use cano_task_models::batch::*;
        pub use cano_task_models::batch_object::*;
    }
    #[cfg(feature = "task-models")]
    pub use cano_macros::batch;

    /// Timer tasks: wait for a duration or a moment (the `cano-task-models` crate).
    #[cfg(feature = "task-models")]
    pub mod timer {
        pub use cano_task_models::timer::*;
    }
    #[cfg(feature = "task-models")]
    pub use cano_macros::timer;

    /// Stream tasks: consume a stream in windows (the `cano-task-models` crate).
    #[cfg(feature = "task-models")]
    pub mod stream {
        pub use cano_task_models::stream::*;
    }
    #[cfg(feature = "task-models")]
    pub use cano_macros::stream;

    /// Stepped tasks: long work in resumable steps from a saved cursor (the
    /// `cano-recovery` crate).
    #[cfg(feature = "recovery")]
    pub mod stepped {
        pub use cano_recovery::{
            DefaultStepCursor, DynSteppedTask, StepOutcome, SteppedTask, SteppedTaskObject,
            SteppedWorkflow, run_stepped,
        };
    }
    #[cfg(feature = "recovery")]
    pub use cano_macros::stepped;
}

/// Retry modes and the standalone retry loop (the `cano-retry` crate).
pub mod retry {
    pub use cano_retry::*;
}

/// Admission control (the `cano-circuit` crate): the circuit breaker and the rate
/// limiters, usable inside a workflow or on their own.
pub mod circuit {
    pub use cano_circuit::*;
}

pub use cano_circuit::{
    BreakerPolicy, CircuitBreaker, CircuitPolicy, CircuitState, Permit as CircuitPermit,
    RateLimiter, TripRule,
};

/// The simple checkpoint store (cano 0.13's): `append`, `load_run` and `clear` by
/// workflow id. The engine's full store trait, with its rows, is
/// [`checkpoint::CheckpointStore`].
pub use cano_core::checkpoint::simple::{CheckpointRow, CheckpointStore, RowKind};
pub use cano_core::{
    BoxError, CancellationToken, CanoError, CanoResult, DefaultKey, DrainGuard, DynRouterTask,
    DynTask, ErrorDetail, HealthStatus, Interest, MemoryStore, Node, Resource, ResourceKey,
    ResourceLifecycle, Resources, RetryMode, RouterTask, RouterTaskObject, RunContext, RunHandle,
    RunId, RunObserver, RunOptions, StateEntry, Task, TaskConfig, TaskFuture, TaskObject,
    TaskProgress, TaskResult, Workflow, WorkflowObserver, WorkflowState,
};
pub use cano_core::{DurableStore, IntoCheckpointing, Retention, RunRef, RunStatus, RunSummary};
pub use cano_macros::{FromResources, Resource, checkpoint_store, node, resource, task};

/// Parallel split/join states (the `cano-split` crate, feature `split`, on by default).
#[cfg(feature = "split")]
pub mod split {
    pub use cano_split::*;
}

#[cfg(feature = "split")]
pub use cano_split::{
    BranchOutcome, Branches, JoinConfig, JoinStrategy, SplitExt, SplitResult, SplitTaskResult,
};

/// Crash recovery: the simple checkpoint store trait (cano 0.13's, always here) and,
/// with feature `recovery` (on by default), the `cano-recovery` crate: checkpoint
/// stores and stepped tasks.
pub mod recovery {
    pub use cano_core::checkpoint::simple::{CheckpointRow, CheckpointStore, RowKind, run_id_for};
    #[cfg(feature = "recovery")]
    pub use cano_recovery::*;
}

#[cfg(feature = "recovery")]
pub use cano_recovery::{
    DefaultStepCursor, Durability, DynSteppedTask, MemoryCheckpointStore, SledCheckpointStore,
    StepOutcome, SteppedTask, SteppedTaskObject, SteppedWorkflow, run_stepped,
};

/// Sagas (the `cano-saga` crate, feature `saga`, on by default): compensatable tasks,
/// undone newest first when a later state of their run fails. `#[saga::task]` lets
/// their impl blocks use `async fn`.
#[cfg(feature = "saga")]
pub mod saga {
    pub use cano_saga::*;

    /// Lets an `impl CompensatableTask<S> for T` block use `async fn`; with
    /// `state = S` it turns an inherent impl block into the implementation. Written
    /// `#[saga::task]` with `use cano::prelude::*`.
    pub use cano_macros::saga_task as task;
}

#[cfg(feature = "saga")]
pub use cano_saga::{CompensatableTask, ErasedCompensatable, SagaExt};

#[cfg(feature = "tracing")]
pub use cano_telemetry::TracingObserver;

/// Scheduling (the `cano-scheduler` crate, feature `scheduler`): cron, interval and
/// manual flows, backoff and trip, overlap and missed-fire policies, graceful stop.
#[cfg(feature = "scheduler")]
pub mod scheduler {
    pub use cano_scheduler::*;
}

#[cfg(feature = "scheduler")]
pub use cano_scheduler::{
    BackoffPolicy, FlowInfo, FlowPolicy, MissedFire, Overlap, RunningScheduler, Schedule,
    Scheduler, Status,
};

#[cfg(feature = "metrics")]
pub use cano_telemetry::MetricsObserver;

/// Many machines on PostgreSQL (the `cano-postgres` crate, feature `postgres`): the
/// checkpoint store, the run queue, leased and fenced workers, and cron ticks fired
/// once across scheduler processes.
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use cano_postgres::*;
}

#[cfg(feature = "postgres")]
pub use cano_postgres::{
    ClusterScheduler, EnqueueOptions, PgOptions, PostgresCheckpointStore, QueueStatus, RunQueue,
    Worker,
};

/// Metrics (feature `metrics`): what [`MetricsObserver`] records, and [`describe`](metrics::describe)
/// to register help text and units with your recorder.
#[cfg(feature = "metrics")]
pub mod metrics {
    pub use cano_telemetry::{METRICS, MetricsObserver, describe};
}

#[cfg(feature = "task-models")]
pub use cano_task_models::{
    BatchConfig, BatchTask, BatchTaskObject, Deadline, DefaultBatchItem, DefaultBatchItemOutput,
    DynBatchTask, DynPollTask, ItemErrorPolicy, ItemResult, ItemStream, PollErrorPolicy,
    PollOutcome, PollTask, PollTaskObject, StreamConfig, StreamSummary, StreamTask, TimerTask,
    WindowOutcome, run_batch, run_poll_loop,
};

/// The test kit (the `cano-testing` crate, feature `testing`): a recording observer
/// with path assertions, a checkpoint store with fault injection, a task that fails or
/// panics on chosen attempts, and paused-clock helpers. Enable it in
/// `[dev-dependencies]`.
#[cfg(feature = "testing")]
pub mod testing {
    pub use cano_testing::*;
}

/// What a task author writes every day: `use cano::prelude::*;`. It holds cano
/// 0.13's prelude (so 0.13 programs build unchanged) and little more; each feature
/// adds its names only when it is on. Everything else is at the crate root or in its
/// module (`cano::task::timer`, `cano::scheduler`, `cano::postgres`, ...), so a glob
/// import clashes with few of your own names.
pub mod prelude {
    // The task (or a node: prep, exec, post), its result and settings, and the errors.
    pub use crate::{
        CanoError, CanoResult, Node, RetryMode, Task, TaskConfig, TaskObject, TaskResult,
    };
    // The workflow, its state kinds and routers.
    pub use crate::{RouterTask, StateEntry, Workflow};
    // Resources, and the in-memory store tasks share data through.
    /// The `Resource` derive under a second name (cano 0.13's prelude has both).
    pub use crate::Resource as ResourceDerive;
    pub use crate::{FromResources, HealthStatus, MemoryStore, Resource, Resources};
    // The run a task is part of (to stop early when it is cancelled).
    pub use crate::RunContext;
    // Observers and the circuit breaker.
    pub use crate::{CircuitBreaker, CircuitPermit, CircuitPolicy, CircuitState, WorkflowObserver};
    // The simple checkpoint store (cano 0.13's).
    pub use crate::{CheckpointRow, CheckpointStore, RowKind};
    // Attribute macros; `task` is also the module of `#[task::router]`, `#[task::poll]`...
    pub use crate::{checkpoint_store, node, resource, task};

    #[cfg(feature = "split")]
    pub use crate::{JoinConfig, JoinStrategy, SplitExt, SplitResult, SplitTaskResult};

    #[cfg(feature = "task-models")]
    pub use crate::{BatchTask, ItemResult, PollErrorPolicy, PollOutcome, PollTask};

    #[cfg(feature = "recovery")]
    pub use crate::{SledCheckpointStore, StepOutcome, SteppedTask, SteppedWorkflow, run_stepped};

    // `saga` the module, so that `#[saga::task]` resolves.
    #[cfg(feature = "saga")]
    pub use crate::{CompensatableTask, SagaExt, saga};

    #[cfg(feature = "scheduler")]
    pub use crate::{BackoffPolicy, FlowInfo, RunningScheduler, Schedule, Scheduler, Status};

    #[cfg(feature = "tracing")]
    pub use crate::TracingObserver;

    #[cfg(feature = "metrics")]
    pub use crate::MetricsObserver;
}

/// The README's examples, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}
