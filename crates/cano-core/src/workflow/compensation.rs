//! The engine's side of sagas: each run's compensation stack, and the rollback that
//! drains it when the run fails.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::handler::{StateContext, TaskEnv};
use super::{Workflow, WorkflowState};
use crate::checkpoint::{Bincode, Codec, DurableStore, ENGINE_PREFIX};
use crate::error::CanoError;
use crate::resource::ResourceKey;
use crate::run::{RunContext, RunId};

/// How long a rollback may take in all, by default.
pub const DEFAULT_COMPENSATION_TIMEOUT: Duration = Duration::from_secs(300);

/// One completed step waiting to be undone if the run fails.
struct Done<S> {
    /// Its place in the stack, also its durable key.
    key: u64,
    state: S,
    output: Arc<[u8]>,
}

/// How a rollback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RollbackOutcome {
    /// Every completed step was undone.
    Clean,
    /// Some were not; they stay on the stack (and in the log) for a later resume.
    Incomplete,
}

struct Stack<S> {
    done: Vec<Done<S>>,
    /// The output the running state's handler recorded, until the engine pushes it.
    recorded: Option<Vec<u8>>,
    next_key: u64,
    /// A resumed run that was already rolling back: the error text it failed with.
    resumed_rollback: Option<String>,
    outcome: Option<RollbackOutcome>,
}

/// The compensation stack of one run; present in runs of workflows with a
/// compensatable state.
pub(crate) struct Compensations<S> {
    stack: Mutex<Stack<S>>,
}

/// A stack entry as saved in the run's durable data.
#[derive(Serialize, Deserialize)]
struct SavedStep {
    state: Vec<u8>,
    label: String,
    output: Vec<u8>,
}

fn step_key(key: u64) -> String {
    // Zero-padded hex keeps the durable keys in stack order.
    format!("{ENGINE_PREFIX}saga/{key:016x}")
}

fn rollback_key() -> String {
    format!("{ENGINE_PREFIX}rollback")
}

/// Whether `durable` holds a saved compensation stack or rollback marker (a run's
/// durable data may hold other engine entries, such as a task's saved progress).
pub(crate) fn saved_in(durable: &DurableStore) -> bool {
    !durable
        .engine_entries(&format!("{ENGINE_PREFIX}saga/"))
        .is_empty()
        || !durable.engine_entries(&rollback_key()).is_empty()
}

impl<S> Compensations<S> {
    pub(crate) fn new() -> Self {
        Self {
            stack: Mutex::new(Stack {
                done: Vec::new(),
                recorded: None,
                next_key: 0,
                resumed_rollback: None,
                outcome: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Stack<S>> {
        // Every change is a single push, pop or assignment: sound after a panic.
        self.stack.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the output a handler recorded for the state it is running.
    pub(crate) fn record(&self, output: Vec<u8>) -> Result<(), CanoError> {
        let mut stack = self.lock();
        if stack.recorded.is_some() {
            return Err(CanoError::workflow(
                "a compensation output was recorded twice for one step",
            )
            .with_hint("a handler records one output per step it completes"));
        }
        stack.recorded = Some(output);
        Ok(())
    }

    pub(crate) fn has_recorded(&self) -> bool {
        self.lock().recorded.is_some()
    }

    fn push(&self, state: S, output: Arc<[u8]>) -> u64 {
        let mut stack = self.lock();
        let key = stack.next_key;
        stack.next_key += 1;
        stack.done.push(Done { key, state, output });
        key
    }

    fn remove(&self, key: u64) {
        self.lock().done.retain(|d| d.key != key);
    }

    /// Whether a failed run has something to roll back: completed steps, or a
    /// rollback it was resumed in the middle of.
    pub(crate) fn must_roll_back(&self) -> bool {
        let stack = self.lock();
        !stack.done.is_empty() || stack.resumed_rollback.is_some()
    }

    /// The text of the error a resumed run had failed with, if it was rolling back.
    pub(crate) fn resumed_rollback(&self) -> Option<String> {
        self.lock().resumed_rollback.clone()
    }

    pub(crate) fn outcome(&self) -> Option<RollbackOutcome> {
        self.lock().outcome
    }

    /// The entries newest first: the order they are undone in.
    fn newest_first(&self) -> Vec<(u64, S, Arc<[u8]>)>
    where
        S: Clone,
    {
        self.lock()
            .done
            .iter()
            .rev()
            .map(|d| (d.key, d.state.clone(), d.output.clone()))
            .collect()
    }

    /// Rebuilds a resumed run's stack from its durable data.
    pub(crate) fn restore(
        durable: &DurableStore,
        run: RunId,
        decode: &dyn Fn(&[u8]) -> Result<S, CanoError>,
    ) -> Result<Self, CanoError> {
        let saga = Self::new();
        {
            let mut stack = saga.lock();
            let prefix = format!("{ENGINE_PREFIX}saga/");
            for (key, bytes) in durable.engine_entries(&prefix) {
                let corrupt = |what: String| {
                    CanoError::store(format!(
                        "the compensation record {key:?} of run {run} {what}"
                    ))
                    .with_hint("the run's log is damaged or was written by another build; resume it with the build that wrote it")
                    .permanent()
                };
                let number = u64::from_str_radix(&key[prefix.len()..], 16)
                    .map_err(|_| corrupt("has a malformed key".into()))?;
                let saved: SavedStep = Bincode::decode(&bytes)
                    .map_err(|e| corrupt(format!("does not decode: {}", e.message())))?;
                let state = decode(&saved.state).map_err(|e| {
                    corrupt(format!(
                        "names state {} that this workflow's state type cannot decode: {}",
                        saved.label,
                        e.message()
                    ))
                })?;
                stack.done.push(Done {
                    key: number,
                    state,
                    output: saved.output.into(),
                });
                stack.next_key = stack.next_key.max(number + 1);
            }
            if let Some((_, message)) = durable.engine_entries(&rollback_key()).first() {
                let message: String = Bincode::decode(message).map_err(|e| {
                    CanoError::store(format!(
                        "the rollback marker of run {run} does not decode: {}",
                        e.message()
                    ))
                    .permanent()
                })?;
                stack.resumed_rollback = Some(message);
            }
        }
        Ok(saga)
    }
}

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
            let Some(output) = saga.lock().recorded.take() else {
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
        let (Some(journal), Some(checkpointing)) = (run.journal(), &self.spec.checkpoint) else {
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
            let journal = run.journal();
            let mut failures = Vec::new();
            // A resumed rollback has its marker and its rows already. A new one is
            // recorded before any compensation runs: a rollback the log does not know
            // of would be undone by a resume that goes forward again.
            if let (Some(journal), None) = (journal, saga.resumed_rollback()) {
                let marker = Bincode::encode(&message).unwrap_or_default();
                journal.durable().put_engine(rollback_key(), marker);
                if let Err(e) = journal.rollback(&message).await {
                    journal.durable().remove_engine(&rollback_key());
                    saga.lock().outcome = Some(RollbackOutcome::Incomplete);
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
            saga.lock().outcome = Some(if failures.is_empty() {
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
