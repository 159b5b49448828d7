//! Observers: synchronous callbacks for what happens in a run.
//!
//! Implement the [`WorkflowObserver`] methods you care about (all default to doing
//! nothing) and attach it with `Workflow::with_observer`. Every callback carries the
//! [`RunId`], so concurrent runs of one workflow can be told apart. A workflow without
//! observers does not pay for them: the engine checks for an empty list and skips the
//! calls.
//!
//! Callbacks run on the engine's task, between awaits: keep them short and never block.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::error::CanoError;
use crate::run::RunId;

#[cfg(feature = "metrics")]
pub use crate::metrics_observer::MetricsObserver;
#[cfg(feature = "tracing")]
pub use crate::tracing_observer::TracingObserver;

/// Receives lifecycle and failure events of workflow runs. See the [module docs](self).
pub trait WorkflowObserver: Send + Sync {
    /// A run starts in `initial`.
    fn on_run_start(&self, run: RunId, initial: &dyn Debug) {
        let _ = (run, initial);
    }

    /// A run ended: `Ok` with the exit state, or the error it returns.
    fn on_run_end(&self, run: RunId, outcome: Result<&dyn Debug, &CanoError>) {
        let _ = (run, outcome);
    }

    /// The run entered `state` (before its handler runs).
    fn on_state_enter(&self, run: RunId, state: &dyn Debug) {
        let _ = (run, state);
    }

    /// Attempt `attempt` (from 1) of `task` starts.
    fn on_task_start(&self, run: RunId, state: &dyn Debug, task: &str, attempt: usize) {
        let _ = (run, state, task, attempt);
    }

    /// `task` succeeded.
    fn on_task_success(&self, run: RunId, state: &dyn Debug, task: &str) {
        let _ = (run, state, task);
    }

    /// `task` failed for good (after any retries); `error` is what the run sees.
    fn on_task_failure(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        let _ = (run, state, task, error);
    }

    /// Attempt `attempt` of `task` failed with `error`; the next starts after `delay`.
    fn on_retry(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        attempt: usize,
        error: &CanoError,
        delay: Duration,
    ) {
        let _ = (run, state, task, attempt, error, delay);
    }

    /// A failure of `task` opened the circuit breaker named `breaker`.
    fn on_circuit_open(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// An attempt of `task` found `breaker` past its reset timeout and went ahead as
    /// the first half-open probe.
    fn on_circuit_half_open(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// A successful probe by `task` closed `breaker`.
    fn on_circuit_close(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// `breaker` refused an attempt of `task` (open, or its half-open probes busy).
    fn on_circuit_rejected(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// An attempt of `task` was held back by the rate limiter named `limiter`:
    /// admitted after `waited`, or refused (`admitted == false`, failing with
    /// [`CanoError::RateLimited`]).
    fn on_throttled(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        limiter: &str,
        waited: Duration,
        admitted: bool,
    ) {
        let _ = (run, state, task, limiter, waited, admitted);
    }

    /// Checkpoint row `seq` of the run was written on entering `state`.
    fn on_checkpoint(&self, run: RunId, state: &dyn Debug, seq: u64) {
        let _ = (run, state, seq);
    }

    /// The run was resumed from its checkpoints in `state`; `seq` is the `Resume` row
    /// that claimed it. (`on_run_start` was called just before, as for any run.)
    fn on_resume(&self, run: RunId, state: &dyn Debug, seq: u64) {
        let _ = (run, state, seq);
    }

    /// The failed run is rolling back: the compensation of the step it completed in
    /// `state` (by `task`) starts.
    fn on_compensation_start(&self, run: RunId, state: &dyn Debug, task: &str) {
        let _ = (run, state, task);
    }

    /// The step completed in `state` was undone.
    fn on_compensation_success(&self, run: RunId, state: &dyn Debug, task: &str) {
        let _ = (run, state, task);
    }

    /// The compensation of the step completed in `state` failed for good (after its
    /// retries), panicked, or ran out of time; the rollback goes on with the next one.
    fn on_compensation_failure(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        error: &CanoError,
    ) {
        let _ = (run, state, task, error);
    }
}

/// The observers of a workflow; empty costs one length check per event site.
#[derive(Clone, Default)]
pub struct Observers(Arc<[Arc<dyn WorkflowObserver>]>);

impl Observers {
    pub(crate) fn push(&mut self, observer: Arc<dyn WorkflowObserver>) {
        let mut all: Vec<_> = self.0.iter().cloned().collect();
        all.push(observer);
        self.0 = all.into();
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Calls `f` for each observer.
    #[inline]
    pub fn each(&self, f: impl Fn(&dyn WorkflowObserver)) {
        for observer in self.0.iter() {
            f(observer.as_ref());
        }
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}
