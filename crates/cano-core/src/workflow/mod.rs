//! [`Workflow`]: the state machine. Register a handler per state, mark the exit states,
//! then [`orchestrate`](Workflow::orchestrate) from an initial state.
//!
//! A workflow is built once and can serve any number of concurrent runs: it is an
//! `Arc` inside, so cloning it is cheap and `orchestrate` takes `&self`.

mod admission;
mod attempt;
mod bounds;
mod compensation;
mod engine;
mod events;
pub(crate) mod execute;
mod graph;
mod handle;
pub mod handler;
mod recovery;
mod saga_stack;

use std::borrow::Cow;
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::CanoError;
use crate::hash::FastBuildHasher;
use crate::observer::{ObserverArc, Observers};
use crate::resource::{DefaultKey, ResourceKey, Resources};
use crate::run::SharedRuns;
use crate::task::{RegisteredTask, Task};
use handler::{HandlerInfo, StateHandler};

pub use compensation::DEFAULT_COMPENSATION_TIMEOUT;
pub use handle::RunHandle;
pub(crate) use recovery::Checkpointing;
use recovery::RecoverySettings;
pub use recovery::{DEFAULT_COMPACT_AFTER, IntoCheckpointing, RunRef};

/// What a workflow state must be: an enum (or any value) that can be cloned, compared,
/// hashed, printed and sent between threads. Implemented for every type that qualifies.
pub trait WorkflowState: Clone + Eq + Hash + Debug + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Debug + Send + Sync + 'static> WorkflowState for T {}

/// When a run sets up and tears down the workflow's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResourceLifecycle {
    /// Every run calls `setup` on each resource before its first state and `teardown`
    /// after it ends, whatever the outcome.
    #[default]
    PerRun,
    /// The caller manages the lifecycle (with `Resources::setup_all` /
    /// `teardown_all`), for example once for a long-lived server or scheduler.
    External,
}

pub(crate) enum Handler<S, K> {
    Task(RegisteredTask<S, K>),
    Custom(Arc<dyn StateHandler<S, K>>),
}

impl<S, K> Clone for Handler<S, K> {
    fn clone(&self) -> Self {
        match self {
            Self::Task(t) => Self::Task(t.clone()),
            Self::Custom(h) => Self::Custom(h.clone()),
        }
    }
}

impl<S: 'static, K: 'static> Handler<S, K> {
    pub(crate) fn info(&self) -> HandlerInfo {
        match self {
            Self::Task(t) => HandlerInfo {
                kind: "task",
                tasks: vec![t.name().clone()],
            },
            Self::Custom(h) => h.info(),
        }
    }

    /// The handler, if it undoes its steps when a later state fails.
    pub(crate) fn compensator(&self) -> Option<&dyn StateHandler<S, K>> {
        match self {
            Self::Custom(h) if h.compensates() => Some(&**h),
            _ => None,
        }
    }

    /// Whether entering the state writes a checkpoint row.
    pub(crate) fn writes_checkpoint(&self) -> bool {
        match self {
            Self::Task(_) => true,
            Self::Custom(h) => h.writes_checkpoint(),
        }
    }

    /// The name to put in errors about this state: the task, or the handler's tasks.
    pub(crate) fn label(&self) -> Cow<'static, str> {
        match self {
            Self::Task(t) => t.name().clone(),
            Self::Custom(h) => {
                // A split may have thousands of branches; name a few.
                const SHOWN: usize = 3;
                let info = h.info();
                let mut names = info
                    .tasks
                    .iter()
                    .take(SHOWN)
                    .map(|t| &**t)
                    .collect::<Vec<_>>()
                    .join(", ");
                if info.tasks.len() > SHOWN {
                    names.push_str(&format!(", +{} more", info.tasks.len() - SHOWN));
                }
                Cow::Owned(format!("{} [{names}]", info.kind))
            }
        }
    }
}

/// The states of a workflow, in registration order, each with its slot. Indexed, so a
/// slot can remember where its state's task went last (see [`Slot::next`]).
pub(crate) type Slots<S, K> = indexmap::IndexMap<S, Slot<S, K>, FastBuildHasher>;

/// States a new workflow has room for before its table grows: as many as fit in a
/// first allocation under 1 KiB (glibc serves those from its small-chunk lists; a
/// larger request first consolidates every free chunk, which showed in building a
/// workflow). About ten for a small state enum.
fn initial_states<S, K>() -> usize {
    const SMALL_ALLOCATION: usize = 1008;
    // An entry of the table: the key's hash, the state and its slot.
    let entry = std::mem::size_of::<(usize, S, Slot<S, K>)>();
    (SMALL_ALLOCATION / entry.max(1)).max(4)
}

/// One state's slot: its handler and whether it ends the run. One map lookup per
/// transition answers both, and usually not even that (see [`Slot::next`]).
pub(crate) struct Slot<S, K> {
    pub(crate) handler: Option<Handler<S, K>>,
    pub(crate) exit: bool,
    /// Whether the handler is a task whose attempts are just its future (see
    /// `TaskConfig::is_plain`) with no targets declared to check its next state
    /// against (see [`direct`](Self::direct)). A flag, not a second handle on the
    /// task: every handle costs an atomic count at build and at drop.
    plain_task: bool,
    /// The states this state's task declared it moves to (see
    /// [`Workflow::transitions`]); checked after every run of the state.
    pub(crate) targets: Option<Arc<[S]>>,
    /// The index of the state this state's handler moved to last time: most tasks
    /// name the same next state every time, and comparing with it is quicker than
    /// hashing it. Shared by all runs; a stale hint costs only the lookup.
    hint: AtomicUsize,
}

impl<S, K> Slot<S, K> {
    /// Works out [`direct`](Self::direct) again, after the handler or the targets
    /// changed.
    pub(crate) fn refresh(&mut self) {
        self.plain_task = matches!(
            &self.handler,
            Some(Handler::Task(entry)) if self.targets.is_none() && entry.config().is_plain()
        );
    }

    /// The handler's task, when the engine may simply await it: no breaker, limiter or
    /// timeout, no declared targets. Read with `exit`: the engine would otherwise
    /// reach through the task to its config and check the targets on every transition.
    #[inline]
    pub(crate) fn direct(&self) -> Option<&RegisteredTask<S, K>> {
        if !self.plain_task {
            return None;
        }
        match &self.handler {
            Some(Handler::Task(entry)) => Some(entry),
            _ => None,
        }
    }

    fn empty() -> Self {
        Self {
            handler: None,
            exit: false,
            plain_task: false,
            targets: None,
            hint: AtomicUsize::new(usize::MAX),
        }
    }
}

impl<S: Hash + Eq, K> Slot<S, K> {
    /// The slot of `next`, the state this slot's handler just chose, in `slots`;
    /// `None` when nothing is registered for it.
    #[inline]
    pub(crate) fn next<'s>(&self, slots: &'s Slots<S, K>, next: &S) -> Option<&'s Slot<S, K>> {
        hinted(slots, &self.hint, next)
    }
}

/// The slot of `state`, looked for first at the index `hint` remembers (updated when
/// it was wrong); `None` when nothing is registered for `state`.
#[inline]
pub(crate) fn hinted<'s, S: Hash + Eq, K>(
    slots: &'s Slots<S, K>,
    hint: &AtomicUsize,
    state: &S,
) -> Option<&'s Slot<S, K>> {
    if let Some((known, slot)) = slots.get_index(hint.load(Ordering::Relaxed))
        && known == state
    {
        return Some(slot);
    }
    let (index, _, slot) = slots.get_full(state)?;
    hint.store(index, Ordering::Relaxed);
    Some(slot)
}

impl<S, K> Clone for Slot<S, K> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            exit: self.exit,
            plain_task: self.plain_task,
            targets: self.targets.clone(),
            hint: AtomicUsize::new(usize::MAX),
        }
    }
}

pub(crate) struct Spec<S, K> {
    pub(crate) slots: Slots<S, K>,
    pub(crate) resources: Arc<Resources<K>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) observers: Observers,
    pub(crate) lifecycle: ResourceLifecycle,
    /// Mistakes found while building (a state registered twice); reported by
    /// `validate` and by every run, since a builder method cannot fail.
    pub(crate) problems: Vec<String>,
    pub(crate) has_exit: bool,
    /// Whether runs carry a store for handlers to publish results in (see
    /// [`RunContext::outputs`](crate::RunContext::outputs)).
    pub(crate) outputs: bool,
    /// What `validate` found, computed on first use. A builder change clones the spec,
    /// which starts this afresh.
    pub(crate) findings: OnceLock<Vec<String>>,
    /// The checkpoint store and state codec, when runs are checkpointed.
    pub(crate) checkpoint: Option<Checkpointing<S>>,
    pub(crate) recovery: RecoverySettings,
    /// Whether a state compensates, so runs keep a compensation stack.
    pub(crate) compensating: bool,
    /// The bound on a rollback's duration.
    pub(crate) compensation_timeout: Duration,
    /// The index of the state the last run started in (see [`hinted`]): most runs of
    /// a workflow start in the same state.
    pub(crate) start_hint: AtomicUsize,
    /// The run record shared by runs that have nothing but the workflow's resources
    /// (see [`RunContext`](crate::RunContext)). A builder change clones the spec,
    /// which starts this afresh.
    pub(crate) shared_runs: SharedRuns,
    /// The span every run's span is a child of (`with_tracing_span`).
    #[cfg(feature = "tracing")]
    pub(crate) tracing_span: Option<tracing::Span>,
}

impl<S: Clone, K> Clone for Spec<S, K> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            resources: self.resources.clone(),
            timeout: self.timeout,
            observers: self.observers.clone(),
            lifecycle: self.lifecycle,
            problems: self.problems.clone(),
            has_exit: self.has_exit,
            outputs: self.outputs,
            findings: OnceLock::new(),
            checkpoint: self.checkpoint.clone(),
            recovery: self.recovery.clone(),
            compensating: self.compensating,
            compensation_timeout: self.compensation_timeout,
            start_hint: AtomicUsize::new(usize::MAX),
            shared_runs: SharedRuns::default(),
            #[cfg(feature = "tracing")]
            tracing_span: self.tracing_span.clone(),
        }
    }
}

/// A finite state machine of tasks. See the [module docs](self).
///
/// The builder methods consume the workflow and return it, so chain them; a discarded
/// result is a warning (`#[must_use]`), because the registration would be lost.
#[must_use = "builder methods return the updated workflow; a discarded one loses the change"]
pub struct Workflow<S, K = DefaultKey> {
    pub(crate) spec: Arc<Spec<S, K>>,
}

impl<S, K> Clone for Workflow<S, K> {
    fn clone(&self) -> Self {
        Self {
            spec: self.spec.clone(),
        }
    }
}

impl<S: WorkflowState> Workflow<S, DefaultKey> {
    /// A workflow whose tasks need no resources (they implement `run_bare`). The same
    /// as `Workflow::new(Resources::empty())`.
    pub fn bare() -> Self {
        Self::new(Resources::empty())
    }
}

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// A workflow whose tasks share `resources`.
    pub fn new(resources: Resources<K>) -> Self {
        Self {
            spec: Arc::new(Spec {
                // Room for a typical workflow's states up front: growing the table state
                // by state was a fifth of building one.
                slots: Slots::with_capacity_and_hasher(
                    initial_states::<S, K>(),
                    FastBuildHasher::default(),
                ),
                resources: Arc::new(resources),
                timeout: None,
                observers: Observers::default(),
                lifecycle: ResourceLifecycle::default(),
                problems: Vec::new(),
                has_exit: false,
                outputs: false,
                findings: OnceLock::new(),
                checkpoint: None,
                recovery: RecoverySettings::new::<S>(),
                compensating: false,
                compensation_timeout: compensation::DEFAULT_COMPENSATION_TIMEOUT,
                start_hint: AtomicUsize::new(usize::MAX),
                shared_runs: SharedRuns::default(),
                #[cfg(feature = "tracing")]
                tracing_span: None,
            }),
        }
    }

    fn spec_mut(&mut self) -> &mut Spec<S, K> {
        Arc::make_mut(&mut self.spec)
    }

    /// Runs `task` whenever the workflow enters `state`. The task's
    /// [`config`](Task::config) and [`name`](Task::name) are read here, once.
    pub fn register<T: Task<S, K> + 'static>(self, state: S, task: T) -> Self {
        let entry = RegisteredTask::new(task);
        self.register_slot(state, Handler::Task(entry))
    }

    /// Runs a custom [`StateHandler`] whenever the workflow enters `state`. This is how
    /// split/join, compensatable and stepped states plug in.
    ///
    /// Runs of a workflow with a custom handler carry an outputs store, where handlers
    /// publish what later states read (see [`RunContext::outputs`](crate::RunContext::outputs)).
    pub fn register_handler<H: StateHandler<S, K>>(mut self, state: S, handler: H) -> Self {
        let spec = self.spec_mut();
        spec.outputs = true;
        spec.compensating |= handler.compensates();
        self.register_slot(state, Handler::Custom(Arc::new(handler)))
    }

    /// Registers a router's handler. Unlike other custom handlers, a router does not
    /// make runs carry an outputs store: it publishes nothing.
    pub(crate) fn register_routing<H: StateHandler<S, K>>(self, state: S, handler: H) -> Self {
        self.register_slot(state, Handler::Custom(Arc::new(handler)))
    }

    fn register_slot(mut self, state: S, handler: Handler<S, K>) -> Self {
        let spec = self.spec_mut();
        let slot = spec.slots.entry(state.clone()).or_insert_with(Slot::empty);
        let replaced = slot.handler.replace(handler);
        slot.refresh();
        if let Some(old) = replaced {
            spec.problems.push(format!(
                "state {state:?} is registered twice (first with {}); register each state once",
                old.label()
            ));
        }
        self
    }

    /// Ends the run when the workflow reaches `state`.
    pub fn add_exit_state(mut self, state: S) -> Self {
        let spec = self.spec_mut();
        spec.slots.entry(state).or_insert_with(Slot::empty).exit = true;
        spec.has_exit = true;
        self
    }

    /// Ends the run when the workflow reaches any of `states`.
    pub fn add_exit_states(self, states: impl IntoIterator<Item = S>) -> Self {
        states.into_iter().fold(self, Self::add_exit_state)
    }

    /// Makes `span` the parent of every run's span (`cano.run`), so a run's states,
    /// attempts and events are recorded inside it (feature `tracing`; cano 0.13's
    /// method). A disabled span leaves runs with a root span of their own.
    #[cfg(feature = "tracing")]
    pub fn with_tracing_span(mut self, span: tracing::Span) -> Self {
        self.spec_mut().tracing_span = Some(span);
        self
    }

    /// Fails a run that takes longer than `timeout` in all with
    /// [`CanoError::Workflow`], naming the state it was in.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.spec_mut().timeout = Some(timeout);
        self
    }

    /// Tells `observer` about every run of this workflow: a [`WorkflowObserver`]
    /// (cano 0.13's callbacks by name) or a [`RunObserver`] (run id, state value and
    /// more), as a concrete type or a trait object. May be called again to add more;
    /// each event reaches them in the order they were added.
    ///
    /// [`WorkflowObserver`]: crate::observer::WorkflowObserver
    /// [`RunObserver`]: crate::observer::RunObserver
    pub fn with_observer<O: ObserverArc + ?Sized>(mut self, observer: Arc<O>) -> Self {
        self.spec_mut().observers.push(observer.into_run_observer());
        self
    }

    /// Chooses when resources are set up and torn down (per run by default).
    pub fn with_resource_lifecycle(mut self, lifecycle: ResourceLifecycle) -> Self {
        self.spec_mut().lifecycle = lifecycle;
        self
    }

    /// The workflow's resources.
    pub fn resources(&self) -> &Arc<Resources<K>> {
        &self.spec.resources
    }

    /// The whole-run timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.spec.timeout
    }

    /// The states with a handler, with a description of each (in no particular order).
    pub fn states(&self) -> Vec<(S, HandlerInfo)> {
        self.spec
            .slots
            .iter()
            .filter_map(|(s, slot)| slot.handler.as_ref().map(|h| (s.clone(), h.info())))
            .collect()
    }

    /// What kind of handler runs `state` (cano 0.13's [`StateEntry`]); `None` when
    /// no handler is registered for it.
    ///
    /// [`StateEntry`]: crate::StateEntry
    pub fn state_entry(&self, state: &S) -> Option<crate::StateEntry> {
        self.states()
            .into_iter()
            .find(|(s, _)| s == state)
            .map(|(_, info)| info.entry())
    }

    /// The exit states (in no particular order).
    pub fn exit_states(&self) -> Vec<S> {
        self.spec
            .slots
            .iter()
            .filter(|(_, slot)| slot.exit)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Checks the workflow's structure: at least one handler, at least one exit state,
    /// no state registered twice, no exit state with a handler (it would never run),
    /// each handler's own configuration (see [`StateHandler::check`]) and every state a
    /// handler declares it moves to (see [`StateHandler::targets`]) has a handler or is
    /// an exit state. Every finding is listed in one [`CanoError::Configuration`].
    ///
    /// Every run performs the same check (once per workflow value, then cached), so a
    /// workflow that fails it never starts a task.
    pub fn validate(&self) -> Result<(), CanoError> {
        let findings = self.spec.findings.get_or_init(|| self.findings());
        if findings.is_empty() {
            Ok(())
        } else {
            Err(CanoError::configuration(format!(
                "invalid workflow: {}",
                findings.join("; ")
            )))
        }
    }

    fn findings(&self) -> Vec<String> {
        let spec = &*self.spec;
        let mut findings = spec.problems.clone();
        if !spec.slots.values().any(|slot| slot.handler.is_some()) {
            findings
                .push("no state has a handler; register tasks with .register(state, task)".into());
        }
        if !spec.has_exit {
            findings.push(
                "no exit state, so no run can end; add one with .add_exit_state(state)".into(),
            );
        }
        // Limits too small to work (`Duration::MAX`, by contrast, means no limit).
        if spec.timeout == Some(Duration::ZERO) {
            findings.push(
                "a workflow timeout of zero (Workflow::with_timeout) fails every run before its first state; give it a positive duration".into(),
            );
        }
        if spec.compensating && spec.compensation_timeout.is_zero() {
            findings.push(
                "a compensation timeout of zero (Workflow::with_compensation_timeout) would skip every compensation of a rollback; give it a positive duration".into(),
            );
        }
        // Per-state findings, sorted by state so the message is the same on every run.
        let mut per_state: Vec<(String, String)> = Vec::new();
        for (state, slot) in &spec.slots {
            let Some(handler) = &slot.handler else {
                if slot.targets.is_some() {
                    let name = format!("{state:?}");
                    per_state.push((name.clone(), format!(
                        "state {name} declares transitions but has no handler; register a task for it"
                    )));
                }
                continue;
            };
            // Formatted only when there is something to say: a sound workflow is
            // checked without allocating per state.
            let name = || format!("{state:?}");
            if slot.exit {
                let name = name();
                per_state.push((name.clone(), format!(
                    "state {name} is an exit state and has a handler; the handler would never run, so remove one of the two"
                )));
            }
            for target in slot.targets.iter().flat_map(|t| t.iter()) {
                let wired = spec
                    .slots
                    .get(target)
                    .is_some_and(|t| t.exit || t.handler.is_some());
                if !wired {
                    let name = name();
                    per_state.push((name.clone(), format!(
                        "state {name} declares a transition to {target:?}, which has no handler and is not an exit state; register it or add it with .add_exit_state"
                    )));
                }
            }
            let custom = match handler {
                Handler::Task(entry) => {
                    if entry.config().attempt_timeout() == Some(Duration::ZERO) {
                        let name = name();
                        per_state.push((name.clone(), format!(
                            "task `{}` in state {name} has an attempt timeout of zero (TaskConfig::with_attempt_timeout), which fails every attempt; give it a positive duration",
                            entry.name()
                        )));
                    }
                    continue;
                }
                Handler::Custom(custom) => custom,
            };
            // `info()` lists every task (a split may have thousands): ask only when needed.
            let kind = || custom.info().kind;
            for problem in custom.check() {
                let (name, kind) = (name(), kind());
                per_state.push((name.clone(), format!("{kind} state {name}: {problem}")));
            }
            if custom.parks() {
                let inbox = spec
                    .checkpoint
                    .as_ref()
                    .is_some_and(|c| c.simple.is_none() && c.store.signals().is_some());
                if !inbox {
                    let name = name();
                    per_state.push((name.clone(), format!(
                        "wait state {name} needs a checkpoint store with a signal inbox; attach one with .with_checkpoint_store (MemoryCheckpointStore in tests, SledCheckpointStore on disk)"
                    )));
                }
            }
            for target in custom.targets().unwrap_or_default() {
                let wired = spec
                    .slots
                    .get(&target)
                    .is_some_and(|t| t.exit || t.handler.is_some());
                if !wired {
                    let (name, kind) = (name(), kind());
                    per_state.push((name.clone(), format!(
                        "{kind} state {name} moves to {target:?}, which has no handler and is not an exit state; register it or add it with .add_exit_state"
                    )));
                }
            }
        }
        per_state.sort();
        findings.extend(per_state.into_iter().map(|(_, finding)| finding));
        findings
    }

    /// Findings that do not stop a run but deserve a look, one per line, sorted by
    /// state: a wait state with neither a timeout nor a declared sender (a run may
    /// wait there for ever), and what other handlers report. Empty for most workflows;
    /// [`validate`](Self::validate) reports what must be fixed.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<(String, String)> = Vec::new();
        for (state, slot) in &self.spec.slots {
            if let Some(Handler::Custom(custom)) = &slot.handler {
                for warning in custom.warnings() {
                    let name = format!("{state:?}");
                    let kind = custom.info().kind;
                    warnings.push((name.clone(), format!("{kind} state {name}: {warning}")));
                }
            }
        }
        warnings.sort();
        warnings.into_iter().map(|(_, w)| w).collect()
    }

    /// Checks that a run can start in `initial`: it has a handler, or is an exit state.
    pub fn validate_initial_state(&self, initial: &S) -> Result<(), CanoError> {
        match self.spec.slots.get(initial) {
            Some(slot) if slot.handler.is_some() || slot.exit => Ok(()),
            _ => Err(CanoError::configuration(format!("initial state {initial:?} has no handler"))
                .with_hint("register a task for it with .register(state, task), or start from another state")),
        }
    }
}

impl<S: Debug, K> Debug for Workflow<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut states: Vec<String> = self.spec.slots.keys().map(|s| format!("{s:?}")).collect();
        states.sort();
        f.debug_struct("Workflow")
            .field("states", &states)
            .field("timeout", &self.spec.timeout)
            .field("observers", &self.spec.observers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(states: &[u8]) -> Slots<u8, DefaultKey> {
        states.iter().map(|&s| (s, Slot::empty())).collect()
    }

    #[test]
    fn a_slot_finds_the_next_state_whether_or_not_its_hint_is_right() {
        let table = slots(&[0, 1, 2]);
        let from = &table[0];
        // No hint yet: a lookup, which leaves one.
        assert!(std::ptr::eq(from.next(&table, &2).unwrap(), &table[2]));
        assert_eq!(from.hint.load(Ordering::Relaxed), 2);
        // The hinted state again: found by the hint.
        assert!(std::ptr::eq(from.next(&table, &2).unwrap(), &table[2]));
        // Another state: the stale hint is only a lookup more, and is replaced.
        assert!(std::ptr::eq(from.next(&table, &1).unwrap(), &table[1]));
        assert_eq!(from.hint.load(Ordering::Relaxed), 1);
        // A state nobody registered is not found, and the hint stays.
        assert!(from.next(&table, &9).is_none());
        assert_eq!(from.hint.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_cloned_slot_starts_without_a_hint() {
        let table = slots(&[0, 1]);
        table[0].next(&table, &1);
        assert_eq!(table[0].clone().hint.load(Ordering::Relaxed), usize::MAX);
    }
}
