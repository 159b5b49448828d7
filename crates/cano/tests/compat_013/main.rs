//! Programs written against cano 0.13's documented API, compiled against this facade
//! unchanged: one module per family (errors, observers, resources and stores, the
//! circuit breaker, task models, recovery, the scheduler, tracing, metrics, and the
//! remaining root, prelude and module names). Each checks what a
//! 0.13 program would see: what it returns, prints and how it fails.
//!
//! Run with the default features, and with `--features scheduler,tracing,metrics`
//! (`.ci/run` does both).

mod circuit;
#[cfg(feature = "metrics")]
mod counters;
mod errors;
#[cfg(all(feature = "split", feature = "saga", feature = "task-models"))]
mod exports;
mod observers;
#[cfg(feature = "saga")]
mod recovery;
mod resources;
#[cfg(feature = "scheduler")]
mod scheduler;
#[cfg(feature = "tracing")]
mod spans;
#[cfg(all(feature = "recovery", feature = "task-models"))]
mod task_models;
