//! Each run's compensation stack: the completed steps a failed run must undo, newest
//! first, and how the stack is saved in (and rebuilt from) the run's durable data.
//! The rollback that drains it is the `compensation` module's.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Bincode, Codec, DurableStore, ENGINE_PREFIX};
use crate::error::CanoError;
use crate::run::RunId;

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
pub(super) struct SavedStep {
    pub(super) state: Vec<u8>,
    pub(super) label: String,
    pub(super) output: Vec<u8>,
}

pub(super) fn step_key(key: u64) -> String {
    // Zero-padded hex keeps the durable keys in stack order.
    format!("{ENGINE_PREFIX}saga/{key:016x}")
}

pub(super) fn rollback_key() -> String {
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

    pub(super) fn push(&self, state: S, output: Arc<[u8]>) -> u64 {
        let mut stack = self.lock();
        let key = stack.next_key;
        stack.next_key += 1;
        stack.done.push(Done { key, state, output });
        key
    }

    pub(super) fn remove(&self, key: u64) {
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

    /// Records how the rollback ended.
    pub(super) fn set_outcome(&self, outcome: RollbackOutcome) {
        self.lock().outcome = Some(outcome);
    }

    /// Takes the output the running state's handler recorded, for the engine to push.
    pub(super) fn take_recorded(&self) -> Option<Vec<u8>> {
        self.lock().recorded.take()
    }

    /// The entries newest first: the order they are undone in.
    pub(super) fn newest_first(&self) -> Vec<(u64, S, Arc<[u8]>)>
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
