//! Observers: synchronous callbacks for what happens in a run.
//!
//! Two traits, attached alike with `Workflow::with_observer`:
//!
//! - [`WorkflowObserver`], cano 0.13's: callbacks that name the state or task as text
//!   (`on_state_enter(&self, state: &str)`, `on_task_failure(&self, task_id, err)`, …).
//!   Every such observer is a [`RunObserver`] through a blanket implementation that
//!   formats the state only when the observer is called; inside a callback,
//!   `RunContext::current()` still gives the run.
//! - [`RunObserver`], the richer one: every callback carries the [`RunId`] (so
//!   concurrent runs of one workflow can be told apart), the state as a value, the
//!   attempt, the error, the delay, and events 0.13 has no names for (run start and
//!   end, circuit half-open and close, throttling, compensations). The tracing and
//!   metrics observers (the `cano-telemetry` crate) and the recording observer
//!   (`cano-testing`) are `RunObserver`s.
//!
//! Implement the methods you care about (all default to doing nothing). A workflow without
//! observers does not pay for them: the engine checks for an empty list and skips the
//! calls. An observer that would ignore the per-transition events in a run says so
//! through [`RunObserver::interest`], asked as each run starts, and then costs
//! nothing per transition either (`TracingObserver` does this when no subscriber
//! records DEBUG).
//!
//! Callbacks run on the engine's task, between awaits: keep them short and never block.

mod names;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::error::CanoError;
use crate::run::RunId;

pub use names::{ObserverArc, WorkflowObserver};

/// Receives lifecycle and failure events of workflow runs, each with its [`RunId`] and
/// state. See the [module docs](self); for cano 0.13's names-only callbacks, implement
/// [`WorkflowObserver`] instead (every such observer is a `RunObserver` too).
pub trait RunObserver: Send + Sync {
    /// Which of the frequent events this observer wants in the run about to start.
    ///
    /// Asked once as each run starts (before `run_started`). When no observer of the
    /// workflow wants a group, the engine leaves those calls out of the run, which
    /// matters for the per-transition groups: an observer that would ignore them costs
    /// nothing per transition. It is a hint, not a contract: a callback outside the
    /// interest may still be called (for example for a task guarded by a breaker), so
    /// it must stay correct if called. Failures, retries, circuit, throttle, checkpoint,
    /// resume and compensation events are always delivered.
    ///
    /// The default is [`Interest::ALL`].
    fn interest(&self) -> Interest {
        Interest::ALL
    }

    /// A run starts in `initial`.
    fn run_started(&self, run: RunId, initial: &dyn Debug) {
        let _ = (run, initial);
    }

    /// A run ended: `Ok` with the exit state, or the error it returns.
    fn run_ended(&self, run: RunId, outcome: Result<&dyn Debug, &CanoError>) {
        let _ = (run, outcome);
    }

    /// The run entered `state` (before its handler runs).
    fn state_entered(&self, run: RunId, state: &dyn Debug) {
        let _ = (run, state);
    }

    /// Attempt `attempt` (from 1) of `task` starts.
    fn task_started(&self, run: RunId, state: &dyn Debug, task: &str, attempt: usize) {
        let _ = (run, state, task, attempt);
    }

    /// The run entered `state` and the first attempt of its `task` starts: what
    /// `state_entered` then `task_started` (attempt 1) say, in one call, which the
    /// engine makes for a plain task when the run's observers want both. The default
    /// makes those two calls; there is no need to override it.
    fn state_and_task_started(&self, run: RunId, state: &dyn Debug, task: &str) {
        self.state_entered(run, state);
        self.task_started(run, state, task, 1);
    }

    /// `task` succeeded.
    fn task_succeeded(&self, run: RunId, state: &dyn Debug, task: &str) {
        let _ = (run, state, task);
    }

    /// `task` failed for good (after any retries); `error` is what the run sees.
    fn task_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        let _ = (run, state, task, error);
    }

    /// Attempt `attempt` of `task` failed with `error`; the next starts after `delay`.
    fn task_retrying(
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
    fn circuit_opened(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// An attempt of `task` found `breaker` past its reset timeout and went ahead as
    /// the first half-open probe.
    fn circuit_half_opened(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// A successful probe by `task` closed `breaker`.
    fn circuit_closed(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// `breaker` refused an attempt of `task` (open, or its half-open probes busy).
    fn circuit_rejected(&self, run: RunId, state: &dyn Debug, task: &str, breaker: &str) {
        let _ = (run, state, task, breaker);
    }

    /// An attempt of `task` was held back by the rate limiter named `limiter`:
    /// admitted after `waited`, or refused (`admitted == false`, failing with
    /// [`CanoError::RateLimited`]).
    fn throttled(
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

    /// Checkpoint row `seq` of the run (of the workflow with id `workflow`) was written
    /// on entering `state`.
    fn checkpointed(&self, run: RunId, workflow: &str, state: &dyn Debug, seq: u64) {
        let _ = (run, workflow, state, seq);
    }

    /// The run (of the workflow with id `workflow`) was resumed from its checkpoints in
    /// `state`; `seq` is the `Resume` row that claimed it. (`run_started` was called
    /// just before, as for any run.)
    fn resumed(&self, run: RunId, workflow: &str, state: &dyn Debug, seq: u64) {
        let _ = (run, workflow, state, seq);
    }

    /// The run finished, but its checkpoint log could not be cleared (it was closed
    /// with a `Finish` row instead, or `error` says what is left).
    fn checkpoint_clear_failed(&self, run: RunId, workflow: &str, error: &CanoError) {
        let _ = (run, workflow, error);
    }

    /// The run was cancelled (or handed back) in `state`; called once, before any
    /// rollback.
    fn cancelled(&self, run: RunId, state: &dyn Debug) {
        let _ = (run, state);
    }

    /// The run ran past its workflow timeout `limit` (after `elapsed`) in `state`.
    fn timed_out(&self, run: RunId, state: &dyn Debug, elapsed: Duration, limit: Duration) {
        let _ = (run, state, elapsed, limit);
    }

    /// The failed run is rolling back: the compensation of the step it completed in
    /// `state` (by `task`) starts.
    fn compensation_started(&self, run: RunId, state: &dyn Debug, task: &str) {
        let _ = (run, state, task);
    }

    /// The step completed in `state` was undone.
    fn compensation_succeeded(&self, run: RunId, state: &dyn Debug, task: &str) {
        let _ = (run, state, task);
    }

    /// The compensation of the step completed in `state` failed for good (after its
    /// retries), panicked, or ran out of time; the rollback goes on with the next one.
    fn compensation_failed(&self, run: RunId, state: &dyn Debug, task: &str, error: &CanoError) {
        let _ = (run, state, task, error);
    }
}

/// The groups of frequent callbacks an observer wants (see
/// [`RunObserver::interest`]); combine them with `|`.
///
/// ```
/// use cano_core::observer::Interest;
///
/// let counting = Interest::STATES | Interest::TASK_STARTS;
/// assert!(counting.contains(Interest::STATES));
/// assert!(!counting.contains(Interest::TASK_SUCCESSES));
/// assert!(Interest::ALL.contains(counting));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// None of the groups.
    pub const NONE: Self = Self(0);
    /// `run_started` and `run_ended`.
    pub const RUNS: Self = Self(1);
    /// `state_entered`, once per transition.
    pub const STATES: Self = Self(1 << 1);
    /// `task_started`, once per attempt.
    pub const TASK_STARTS: Self = Self(1 << 2);
    /// `task_succeeded`, once per transition through a task.
    pub const TASK_SUCCESSES: Self = Self(1 << 3);
    /// Every group.
    pub const ALL: Self = Self(0b1111);

    /// Whether every group in `other` is in `self`.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any group in `other` is in `self`.
    ///
    /// ```
    /// use cano_core::observer::Interest;
    ///
    /// let states = Interest::STATES;
    /// assert!(states.intersects(Interest::STATES | Interest::RUNS));
    /// assert!(!states.intersects(Interest::RUNS));
    /// ```
    #[inline]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets of groups.
    #[inline]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// `self` without the groups in `other`.
    #[inline]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Interest {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl std::ops::BitOrAssign for Interest {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

impl Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Self::RUNS, "RUNS"),
            (Self::STATES, "STATES"),
            (Self::TASK_STARTS, "TASK_STARTS"),
            (Self::TASK_SUCCESSES, "TASK_SUCCESSES"),
        ];
        let mut set = f.debug_set();
        for (group, name) in names {
            if self.contains(group) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// The observers of a workflow; empty costs one check per event site.
///
/// The first observer is kept apart from the others: most workflows have one, and
/// reaching it then takes one load fewer on every event.
#[derive(Clone, Default)]
pub struct Observers {
    first: Option<Arc<dyn RunObserver>>,
    rest: Arc<[Arc<dyn RunObserver>]>,
}

impl Observers {
    pub(crate) fn push(&mut self, observer: Arc<dyn RunObserver>) {
        if self.first.is_none() {
            self.first = Some(observer);
            return;
        }
        let mut rest: Vec<_> = self.rest.iter().cloned().collect();
        rest.push(observer);
        self.rest = rest.into();
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// What the observers want in a run starting now: the union of their interests
    /// ([`Interest::NONE`] without observers).
    #[inline]
    pub fn interest(&self) -> Interest {
        // Asked at the start of every run: without observers, one test and no call.
        if self.is_empty() {
            return Interest::NONE;
        }
        self.union()
    }

    /// The union of the observers' interests (see [`interest`](Self::interest)).
    #[inline(never)]
    fn union(&self) -> Interest {
        let mut all = Interest::NONE;
        self.each(|observer| all |= observer.interest());
        all
    }

    /// The observer, when there is exactly one: a run can keep it at hand and reach it
    /// without going through the workflow on every event.
    #[inline]
    pub(crate) fn single(&self) -> Option<&dyn RunObserver> {
        self.first.as_deref().filter(|_| self.rest.is_empty())
    }

    /// Calls `f` for each observer, in the order they were attached.
    #[inline]
    pub fn each(&self, mut f: impl FnMut(&dyn RunObserver)) {
        if let Some(first) = &self.first {
            f(first.as_ref());
            for observer in self.rest.iter() {
                f(observer.as_ref());
            }
        }
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.len())
    }
}
