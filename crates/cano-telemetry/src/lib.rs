//! # cano-telemetry
//!
//! Observers that report what [cano](https://docs.rs/cano) workflows do to the usual
//! Rust telemetry facades, each behind the feature of the same name (and the facade's):
//!
//! - `tracing`: `TracingObserver` re-emits workflow events as `tracing` events, inside
//!   the `cano.run` / `cano.state` / `cano.attempt` spans the engine opens with the
//!   same feature.
//! - `metrics`: `MetricsObserver` records counters, gauges and histograms through
//!   the `metrics` facade; `describe` registers their help text and units, and
//!   `METRICS` lists them.
//!
//! Both are plain [`RunObserver`](cano_core::RunObserver)s built on cano-core's public
//! observer API: attach them with `Workflow::with_observer(Arc::new(..))`.
//!
//! ```
//! # #[cfg(feature = "tracing")] {
//! use std::sync::Arc;
//! use cano_core::{CanoError, Task, TaskResult, Workflow};
//! use cano_telemetry::TracingObserver;
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Step { Work, Done }
//! struct Work;
//! #[async_trait::async_trait]
//! impl Task<Step> for Work {
//!     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
//!         Ok(TaskResult::Single(Step::Done))
//!     }
//! }
//!
//! let workflow = Workflow::bare()
//!     .register(Step::Work, Work)
//!     .add_exit_state(Step::Done)
//!     .with_observer(Arc::new(TracingObserver::new()));
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! assert_eq!(runtime.block_on(workflow.orchestrate(Step::Work)).unwrap(), Step::Done);
//! # }
//! ```

#[cfg(feature = "metrics")]
mod metrics_observer;
#[cfg(feature = "tracing")]
mod tracing_observer;

#[cfg(feature = "metrics")]
pub use metrics_observer::{METRICS, MetricsObserver, describe};
#[cfg(feature = "tracing")]
pub use tracing_observer::TracingObserver;
