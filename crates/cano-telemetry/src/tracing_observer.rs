//! [`TracingObserver`]: workflow events as `tracing` events (feature `tracing`).

use std::fmt::Debug;
use std::time::Duration;

use tracing::{Level, debug, error, info, warn};

use cano_core::CanoError;
use cano_core::RunId;
use cano_core::observer::{Interest, RunObserver};

/// Re-emits every observer callback as a `tracing` event: run start and end, resumes,
/// compensations and circuit changes at INFO (a failed run at ERROR), retries, open
/// circuits, rejections and refused throttles at WARN, a task's final failure and a
/// failed compensation at ERROR, and the rest (state entries, attempts, checkpoints) at
/// DEBUG. Every event carries `run_id`; with the feature on, the engine also opens the
/// `cano.run`, `cano.state` and `cano.attempt` spans these events nest in. State and
/// attempt spans are opened in runs whose `cano.run` span a subscriber enabled when the
/// run started; other runs skip them, and cost what they would without the feature.
///
/// Each run asks the subscriber once what it wants: the per-transition events (DEBUG)
/// are left out of runs no subscriber records DEBUG for, and without any subscriber
/// the observer costs a run nothing per transition. Other events cost a check each
/// when nobody wants them, never a formatted string.
///
/// ```
/// use std::sync::Arc;
/// use cano_core::Workflow;
/// use cano_telemetry::TracingObserver;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum S { Start, Done }
///
/// let workflow = Workflow::<S>::bare()
///     .add_exit_state(S::Done)
///     .with_observer(Arc::new(TracingObserver::new()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingObserver;

impl TracingObserver {
    /// The observer (it has no settings: filter with your subscriber).
    pub fn new() -> Self {
        Self
    }
}

impl RunObserver for TracingObserver {
    fn interest(&self) -> Interest {
        // Asked per run, so a subscriber installed (or a filter changed) later counts.
        let mut wanted = Interest::NONE;
        if tracing::enabled!(Level::ERROR) {
            wanted |= Interest::RUNS;
        }
        if tracing::enabled!(Level::DEBUG) {
            wanted |= Interest::STATES | Interest::TASK_STARTS | Interest::TASK_SUCCESSES;
        }
        wanted
    }

    fn run_started(&self, run: RunId, initial: &dyn Debug) {
        info!(run_id = %run, initial = ?initial, "run started");
    }

    fn run_ended(&self, run: RunId, outcome: Result<&dyn Debug, &CanoError>) {
        match outcome {
            Ok(state) => info!(run_id = %run, exit = ?state, "run finished"),
            Err(e) => error!(run_id = %run, error = %e, "run failed"),
        }
    }

    fn state_entered(&self, run: RunId, state: &dyn Debug) {
        debug!(run_id = %run, state = ?state, "state entered");
    }

    fn task_started(&self, run: RunId, state: &dyn Debug, task: &str, attempt: usize) {
        debug!(run_id = %run, state = ?state, task, attempt, "attempt started");
    }

    fn task_succeeded(&self, run: RunId, state: &dyn Debug, task: &str) {
        debug!(run_id = %run, state = ?state, task, "task succeeded");
    }

    fn task_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        error!(run_id = %run, state = ?state, task, error = %error, "task failed");
    }

    fn task_retrying(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        attempt: usize,
        error: &CanoError,
        delay: Duration,
    ) {
        warn!(run_id = %run, state = ?state, task, attempt, ?delay, error = %error, "attempt failed, retrying");
    }

    fn circuit_opened(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        warn!(run_id = %run, state = ?state, task, breaker, "circuit opened");
    }

    fn circuit_half_opened(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        info!(run_id = %run, state = ?state, task, breaker, "circuit half-open: probing");
    }

    fn circuit_closed(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        info!(run_id = %run, state = ?state, task, breaker, "circuit closed");
    }

    fn circuit_rejected(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        warn!(run_id = %run, state = ?state, task, breaker, "circuit refused the attempt");
    }

    fn throttled(
        &self,
        run: RunId,
        state: &dyn Debug,
        task: &str,
        limiter: &str,
        waited: Duration,
        admitted: bool,
    ) {
        if admitted {
            debug!(run_id = %run, state = ?state, task, limiter, ?waited, "throttled, then admitted");
        } else {
            warn!(run_id = %run, state = ?state, task, limiter, ?waited, "throttled and refused");
        }
    }

    fn checkpointed(&self, run: RunId, _workflow: &str, state: &dyn Debug, seq: u64) {
        debug!(run_id = %run, state = ?state, seq, "checkpoint written");
    }

    fn resumed(&self, run: RunId, _workflow: &str, state: &dyn Debug, seq: u64) {
        info!(run_id = %run, state = ?state, seq, "run resumed");
    }

    fn compensation_started(&self, run: RunId, state: &dyn Debug, task: &str) {
        info!(run_id = %run, state = ?state, task, "compensating");
    }

    fn compensation_succeeded(&self, run: RunId, state: &dyn Debug, task: &str) {
        info!(run_id = %run, state = ?state, task, "compensated");
    }

    fn compensation_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        error!(run_id = %run, state = ?state, task, error = %error, "compensation failed");
    }
}
