//! The engine's side of sagas: the rollback that drains a run's compensation stack
//! (the `saga_stack` module) when the run fails.
//!
//! A handler that can undo its work ([`StateHandler::compensates`]) records an output
//! after its step succeeds ([`StateContext::record_compensation`]); the engine pushes it,
//! with the state, onto the run's stack. When the run then fails, for whatever reason,
//! the stack is drained newest first, each entry undone by the handler of its state.
//!
//! With a checkpoint store the stack lives in the run's durable data as well (engine
//! keys, saved with the rows and kept by snapshots), so a resumed run still undoes work
//! done before a crash, and a rollback cut short resumes where it stopped.
//!
//! [`StateHandler::compensates`]: super::handler::StateHandler::compensates
//! [`StateContext::record_compensation`]: super::handler::StateContext::record_compensation

#![allow(clippy::manual_async_fn)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;

use super::handler::{StateContext, TaskEnv};
pub(crate) use super::saga_stack::{Compensations, RollbackOutcome, saved_in};
use super::saga_stack::{SavedStep, rollback_key, step_key};
use super::{Workflow, WorkflowState};
use crate::checkpoint::{Bincode, Codec};
use crate::error::CanoError;
use crate::resource::ResourceKey;
use crate::run::{RunContext, RunId};

/// How long a rollback may take in all, by default.
pub const DEFAULT_COMPENSATION_TIMEOUT: Duration = Duration::from_secs(300);

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// How long rolling back a failed run may take in all (5 minutes by default). When
    /// it runs out, the compensation under way is stopped and those not yet started are
    /// skipped; each is reported in [`CanoError::CompensationFailed`] and, with a
    /// checkpoint store, stays recorded for a later
    /// [`resume_from`](Self::resume_from) to finish.
    pub fn with_compensation_timeout(mut self, limit: Duration) -> Self {
        self.spec_mut().compensation_timeout = limit;
        self
    }

    /// The bound on a rollback's duration.
    pub fn compensation_timeout(&self) -> Duration {
        self.spec.compensation_timeout
    }

    /// Pushes the output a handler recorded in `state` onto the run's stack and, with a
    /// checkpoint store, saves it: in the run's durable data, written by the
    /// `Completed` row that also moves the run on to the next state when the handler
    /// succeeded. Returns the handler's `result`, or the error that kept the step from
    /// being saved. Boxed: only compensatable steps pay for it.
    pub(crate) fn push_completed<'a>(
        &'a self,
        saga: &'a Compensations<S>,
        state: &'a S,
        result: Result<S, CanoError>,
        run: &'a RunContext,
    ) -> Pin<Box<dyn Future<Output = Result<S, CanoError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(output) = saga.take_recorded() else {
                return result;
            };
            let saved = self
                .save_completed(saga, state, output, result.as_ref().ok(), run)
                .await;
            // The handler's own error matters more than a failure to save after it.
            match (result, saved) {
                (Ok(next), Ok(())) => Ok(next),
                (Ok(_), Err(e)) | (Err(e), _) => Err(e),
            }
        })
    }

    async fn save_completed(
        &self,
        saga: &Compensations<S>,
        state: &S,
        output: Vec<u8>,
        next: Option<&S>,
        run: &RunContext,
    ) -> Result<(), CanoError> {
        let key = saga.push(state.clone(), output.as_slice().into());
        let (Some(journal), Some(checkpointing)) = (run.journal_of(), &self.spec.checkpoint) else {
            return Ok(());
        };
        let saved = SavedStep {
            state: checkpointing.encode_state(state)?,
            label: format!("{state:?}"),
            output,
        };
        journal
            .durable()
            .put_engine(step_key(key), Bincode::encode(&saved)?);
        if let Some(next) = next {
            let seq = journal
                .completed(checkpointing.encode_state(next)?, format!("{next:?}"))
                .await?;
            let observers = &self.spec.observers;
            if !observers.is_empty() {
                observers.each(|o| {
                    o.checkpointed(run.run_id(), &self.spec.recovery.workflow_id, next, seq)
                });
            }
        }
        Ok(())
    }

    /// Rolls a failed run back: undoes every completed step, newest first, within the
    /// workflow's compensation timeout. Returns `original` if all were undone, otherwise
    /// [`CanoError::CompensationFailed`] with every failure.
    pub(crate) fn roll_back<'a>(
        &'a self,
        saga: &'a Compensations<S>,
        run: &'a RunContext,
        original: CanoError,
    ) -> Pin<Box<dyn Future<Output = CanoError> + Send + 'a>> {
        Box::pin(async move {
            let spec = &*self.spec;
            let observers = &spec.observers;
            let message = original.to_string();
            let journal = run.journal_of();
            let mut failures = Vec::new();
            // A resumed rollback has its marker and its rows already. A new one is
            // recorded before any compensation runs: a rollback the log does not know
            // of would be undone by a resume that goes forward again.
            if let (Some(journal), None) = (journal, saga.resumed_rollback()) {
                let marker = Bincode::encode(&message).unwrap_or_default();
                journal.durable().put_engine(rollback_key(), marker);
                if let Err(e) = journal.rollback(&message).await {
                    journal.durable().remove_engine(&rollback_key());
                    saga.set_outcome(RollbackOutcome::Incomplete);
                    return CanoError::compensation_failed(vec![original, not_started(e)]);
                }
            }
            let limit = spec.compensation_timeout;
            // A bound past what the clock can name (`Duration::MAX`) is no bound.
            let deadline = tokio::time::Instant::now().checked_add(limit);
            let env = TaskEnv {
                resources: spec.resources.clone(),
                run: run.clone(),
                observers: observers.clone(),
            };
            for (key, state, output) in saga.newest_first() {
                let compensator = spec
                    .slots
                    .get(&state)
                    .and_then(|slot| slot.handler.as_ref())
                    .and_then(|h| h.compensator());
                let Some(compensator) = compensator else {
                    failures.push(
                        CanoError::configuration(
                            "a step completed in this state, but no handler of this workflow can compensate it",
                        )
                        .at(&state, "")
                        .with_hint("register the state's compensatable task again (register_with_compensation), or undo the step by hand"),
                    );
                    continue;
                };
                // Named by its task (or tasks), as errors and observers name any task.
                let label = compensator.info().tasks.join(", ");
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    let error = CanoError::timeout(format!(
                        "not attempted: the rollback's time bound of {limit:?} had run out"
                    ))
                    .at(&state, &label)
                    .with_hint("raise Workflow::with_compensation_timeout, or make the compensations before it faster");
                    if !observers.is_empty() {
                        observers
                            .each(|o| o.compensation_failed(run.run_id(), &state, &label, &error));
                    }
                    failures.push(error);
                    continue;
                }
                if !observers.is_empty() {
                    observers.each(|o| o.compensation_started(run.run_id(), &state, &label));
                }
                let undo = compensator.compensate(
                    StateContext {
                        state: &state,
                        env: &env,
                        saga: None,
                    },
                    &output,
                );
                let undo = AssertUnwindSafe(undo).catch_unwind();
                let bounded = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, undo).await,
                    None => Ok(undo.await),
                };
                let result =
                    match bounded {
                        Ok(Ok(result)) => result,
                        Ok(Err(panic)) => Err(CanoError::from_panic(panic)),
                        Err(_) => Err(CanoError::timeout(format!(
                            "stopped when the rollback's time bound of {limit:?} ran out"
                        ))
                        .with_hint("give the compensation an attempt timeout so a hung call is retried sooner, or raise Workflow::with_compensation_timeout")),
                    };
                match result {
                    Ok(()) => {
                        saga.remove(key);
                        let mut recorded = Ok(());
                        if let Some(journal) = journal {
                            journal.durable().remove_engine(&step_key(key));
                            recorded = journal.rollback(&message).await.map(drop);
                        }
                        if !observers.is_empty() {
                            observers
                                .each(|o| o.compensation_succeeded(run.run_id(), &state, &label));
                        }
                        if let Err(e) = recorded {
                            // The log still lists this step and every older one: stop
                            // here, so that nothing runs that a resume cannot know of.
                            failures.push(unrecorded(e).at(&state, &label));
                            break;
                        }
                    }
                    Err(error) => {
                        let error = error.at(&state, &label);
                        if !observers.is_empty() {
                            observers.each(|o| {
                                o.compensation_failed(run.run_id(), &state, &label, &error)
                            });
                        }
                        failures.push(error);
                    }
                }
            }
            saga.set_outcome(if failures.is_empty() {
                RollbackOutcome::Clean
            } else {
                RollbackOutcome::Incomplete
            });
            if failures.is_empty() {
                original
            } else {
                failures.insert(0, original);
                CanoError::compensation_failed(failures)
            }
        })
    }
}

/// A rollback row that could not be written after a compensation ran.
fn unrecorded(error: CanoError) -> CanoError {
    error.with_hint(
        "this compensation ran, but the checkpoint log could not record it, so the rollback stopped there; once the store works, Workflow::resume_from finishes the rollback and runs this compensation again (compensations must tolerate running twice)",
    )
}

/// The rollback's first row could not be written, so no compensation ran.
fn not_started(error: CanoError) -> CanoError {
    error.with_hint(
        "no compensation ran: the rollback could not be recorded in the checkpoint log, and one that ran unrecorded could be contradicted by a resume; once the store works, Workflow::resume_from re-runs the failed state (and rolls back if it fails again)",
    )
}

/// The error a resumed rollback reports as the run's own: the original error's text
/// (`message`) is all the log kept of it.
pub(crate) fn resumed_failure(run: RunId, message: &str) -> CanoError {
    CanoError::workflow(format!(
        "run {run} failed before this resume and was being rolled back: {message}"
    ))
    .permanent()
}
