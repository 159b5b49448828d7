//! [`RunContext`]: the run a task is part of, readable while it runs, and the
//! thread's current run.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use pin_project_lite::pin_project;

use super::cancel::CancellationToken;
use crate::checkpoint::{DurableStore, Journal, TaskProgress};
use crate::error::CanoError;
use crate::run_id::RunId;
use crate::store::MemoryStore;

/// What a task can learn about the run it is part of.
///
/// Two words: the run id, and a pointer to what only some runs have (a cancellation
/// token, outputs, a journal, shared resources, a span). A run of a bare workflow has
/// none of those and carries a null pointer; every run of a workflow whose only extra
/// is its resources shares one such record. The context is swapped in as the thread's
/// current run on every poll of the run and cloned for every task that asks for it,
/// so its size is paid often.
#[derive(Clone)]
pub struct RunContext {
    run_id: RunId,
    shared: Option<Arc<RunShared>>,
}

/// What some runs have beyond their id.
#[derive(Default)]
struct RunShared {
    /// The run's token, only for runs that can be cancelled.
    cancel: Option<CancellationToken>,
    /// How many tasks asked to finish their work in hand before a cancellation stops
    /// the run (see [`RunContext::hold_drain`]).
    draining: AtomicUsize,
    outputs: Option<MemoryStore>,
    journal: Option<Arc<Journal>>,
    /// The workflow's `Arc<Resources<K>>`, type-erased (the context is not generic).
    resources: Option<Arc<dyn Any + Send + Sync>>,
    /// The run's span, parent of its states' spans; only when a subscriber wants it.
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
}

/// The record shared by the runs of one workflow that have nothing but its resources
/// (see [`RunContext`]); made by the first such run.
#[derive(Default)]
pub(crate) struct SharedRuns(OnceLock<Arc<RunShared>>);

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run_id)
            .field("cancel", &self.cancellation_token())
            .field("outputs", &self.outputs())
            .field("journal", &self.journal_of())
            .finish_non_exhaustive()
    }
}

/// A task's claim to finish its work in hand when its run is cancelled (see
/// [`RunContext::hold_drain`]); released when dropped.
#[must_use = "the claim ends when the guard is dropped"]
pub struct DrainGuard {
    run: Arc<RunShared>,
}

impl fmt::Debug for DrainGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainGuard")
            .field("draining", &self.run.draining.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.run.draining.fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    /// The run being polled on this thread (see [`RunContext::scope`]). Our own rather
    /// than a tokio task-local: every poll of every run enters it, and this one is
    /// reached inline, with no borrow flag to check.
    static CURRENT: Cell<Option<RunContext>> = const { Cell::new(None) };
}

pin_project! {
    /// A future polled with its run as the [current](RunContext::current) one.
    struct InRun<F> {
        // The run while the future is not being polled; the one it displaced while it is.
        run: Option<RunContext>,
        #[pin]
        future: F,
    }
}

impl<F: std::future::Future> std::future::Future for InRun<F> {
    type Output = F::Output;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = Entered::enter(this.run);
        this.future.poll(cx)
    }
}

/// The run swapped into [`CURRENT`] for one poll; swapped back when dropped, a panic
/// in the poll included, so scopes nest.
struct Entered<'a> {
    slot: &'a mut Option<RunContext>,
}

impl<'a> Entered<'a> {
    #[inline]
    fn enter(slot: &'a mut Option<RunContext>) -> Self {
        swap_current(slot);
        Self { slot }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        swap_current(self.slot);
    }
}

/// Exchanges `slot` with the thread's current run. (While the thread's locals are
/// being torn down there is no current run to exchange: the future then runs outside
/// any, as it would on a thread that never had one.)
#[inline]
fn swap_current(slot: &mut Option<RunContext>) {
    let _ = CURRENT.try_with(|current| {
        let displaced = current.replace(slot.take());
        *slot = displaced;
    });
}

/// What a run starts with, beside its id (see [`RunContext::start`]).
#[derive(Default)]
pub(crate) struct RunStart {
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) outputs: Option<MemoryStore>,
    pub(crate) journal: Option<Arc<Journal>>,
    /// The span the run's span is a child of.
    #[cfg(feature = "tracing")]
    pub(crate) parent_span: Option<tracing::Span>,
}

impl RunContext {
    /// A context with nothing but an id, for tests.
    #[cfg(test)]
    pub(crate) fn bare(run_id: RunId) -> Self {
        Self {
            run_id,
            shared: None,
        }
    }

    /// The context of a run of workflow `workflow` (its id, for the run's span) with
    /// `resources`. A run with nothing but non-empty resources takes the record in
    /// `shared`, made once per workflow; a run with more gets its own.
    #[inline]
    pub(crate) fn start<K: crate::resource::ResourceKey>(
        run_id: RunId,
        start: RunStart,
        resources: &Arc<crate::Resources<K>>,
        workflow: &str,
        shared: &SharedRuns,
    ) -> Self {
        // A run with nothing at all (no span to ask a subscriber about either) is its
        // id alone; told apart inline, where the caller's empty options are known.
        #[cfg(not(feature = "tracing"))]
        if start.cancel.is_none()
            && start.outputs.is_none()
            && start.journal.is_none()
            && resources.is_empty()
        {
            return Self {
                run_id,
                shared: None,
            };
        }
        Self::start_recorded(run_id, start, resources, workflow, shared)
    }

    /// [`start`](Self::start) for a run that may need a record.
    #[inline(never)]
    fn start_recorded<K: crate::resource::ResourceKey>(
        run_id: RunId,
        start: RunStart,
        resources: &Arc<crate::Resources<K>>,
        workflow: &str,
        shared: &SharedRuns,
    ) -> Self {
        #[cfg(feature = "tracing")]
        let span = {
            let span = run_span(run_id, workflow, start.parent_span.as_ref());
            (!span.is_disabled()).then_some(span)
        };
        #[cfg(feature = "tracing")]
        let traced = span.is_some();
        #[cfg(not(feature = "tracing"))]
        let (traced, _) = (false, workflow);
        let own_record =
            start.cancel.is_some() || start.outputs.is_some() || start.journal.is_some() || traced;
        if !own_record {
            // Nothing but an id and the workflow's resources: no record at all, or the
            // one every such run of the workflow shares.
            if resources.is_empty() {
                return Self {
                    run_id,
                    shared: None,
                };
            }
            let record = || {
                Arc::new(RunShared {
                    resources: Some(resources.clone()),
                    ..RunShared::default()
                })
            };
            let common = shared.0.get_or_init(record);
            // The record holds the workflow's own resources; a spec that somehow had
            // others would get a record of its own, never a stranger's.
            let same = common
                .resources
                .as_ref()
                .is_some_and(|r| std::ptr::addr_eq(Arc::as_ptr(r), Arc::as_ptr(resources)));
            return Self {
                run_id,
                shared: Some(if same { common.clone() } else { record() }),
            };
        }
        let own = RunShared {
            cancel: start.cancel,
            outputs: start.outputs,
            journal: start.journal,
            resources: (!resources.is_empty())
                .then(|| resources.clone() as Arc<dyn Any + Send + Sync>),
            #[cfg(feature = "tracing")]
            span,
            ..RunShared::default()
        };
        Self {
            run_id,
            shared: Some(Arc::new(own)),
        }
    }

    /// The run's span (a disabled one when nothing traces the run).
    #[cfg(feature = "tracing")]
    pub(crate) fn span(&self) -> &tracing::Span {
        static UNTRACED: tracing::Span = tracing::Span::none();
        self.shared
            .as_deref()
            .and_then(|s| s.span.as_ref())
            .unwrap_or(&UNTRACED)
    }

    /// Whether the run has a span, that is, whether a tracing subscriber wanted it when
    /// it started; its states and attempts get spans only then.
    #[inline]
    pub(crate) fn is_traced(&self) -> bool {
        #[cfg(feature = "tracing")]
        {
            self.shared.as_deref().is_some_and(|s| s.span.is_some())
        }
        #[cfg(not(feature = "tracing"))]
        {
            false
        }
    }

    /// The workflow's resources, shared, for work a task spawns onto other tokio tasks
    /// (which cannot borrow the `&Resources` the task was given). `None` outside a run
    /// started by a workflow, in a workflow without resources, or when `K` is not the
    /// workflow's key type.
    pub fn resources<K: Send + Sync + 'static>(&self) -> Option<Arc<crate::Resources<K>>> {
        self.shared.as_deref()?.resources.clone()?.downcast().ok()
    }

    /// Asks that a cancellation of this run let the calling task finish the work it has
    /// in hand (flush a window, save a cursor) before the run stops: until the guard is
    /// dropped, a cancelled run keeps polling its current state instead of dropping it.
    /// The task must watch [`cancelled`](Self::cancelled) and wind down promptly; the
    /// workflow timeout still cuts it off. `None` for a run that cannot be cancelled.
    pub fn hold_drain(&self) -> Option<DrainGuard> {
        let run = self.shared.as_ref().filter(|s| s.cancel.is_some())?;
        run.draining.fetch_add(1, Ordering::AcqRel);
        Some(DrainGuard { run: run.clone() })
    }

    /// Whether a task of this run holds a [`DrainGuard`].
    pub(crate) fn is_draining(&self) -> bool {
        self.shared
            .as_deref()
            .is_some_and(|s| s.draining.load(Ordering::Acquire) > 0)
    }

    /// The run being executed by the calling task, if called from inside a run.
    pub fn current() -> Option<RunContext> {
        CURRENT
            .try_with(|current| {
                let run = current.take();
                let copy = run.clone();
                current.set(run);
                copy
            })
            .ok()
            .flatten()
    }

    /// Runs `fut` with `self` as the [current](Self::current) run: each poll of `fut`
    /// sees it (dropping `fut` happens outside it). The engine does this for every run;
    /// handlers that spawn work onto other tokio tasks use it so that those tasks see
    /// the run too. Scopes nest: an inner run is current inside the outer one's.
    pub fn scope<F: std::future::Future>(
        self,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        InRun {
            run: Some(self),
            future: fut,
        }
    }

    /// This run's id.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The run's cancellation token, if it has one (runs started with a token or with
    /// `Workflow::spawn`).
    #[inline]
    pub fn cancellation_token(&self) -> Option<&CancellationToken> {
        self.shared.as_deref()?.cancel.as_ref()
    }

    /// This run's outputs: what handlers published for the states after them (a split
    /// state's `SplitResult`, for example), private to the run and dropped with it.
    ///
    /// Present in runs of workflows with a custom handler (split, saga, ...); a workflow
    /// of plain tasks pays nothing for it and returns `None`.
    pub fn outputs(&self) -> Option<&MemoryStore> {
        self.shared.as_deref()?.outputs.as_ref()
    }

    /// The run's checkpoint journal (see [`RunJournal`], the public way to it).
    pub(crate) fn journal_of(&self) -> Option<&Arc<Journal>> {
        self.shared.as_deref()?.journal.as_ref()
    }

    /// The run's durable data (see [`DurableStore`]), in runs of a workflow with a
    /// checkpoint store.
    pub fn durable(&self) -> Option<&DurableStore> {
        self.journal_of().map(|j| j.durable())
    }

    /// Whether the run was cancelled.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancellation_token()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Whether the run was handed back ([`CancellationToken::hand_back`]): it stops
    /// without failing, for another process to resume.
    pub fn is_handed_back(&self) -> bool {
        self.cancellation_token()
            .is_some_and(CancellationToken::is_handed_back)
    }

    /// Completes when the run is cancelled; never, for a run without a token.
    pub async fn cancelled(&self) {
        match self.cancellation_token() {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }
}

/// The span of run `run` of workflow `workflow`, a child of `parent` when one is given
/// and enabled. (The state and attempt spans, children of this one, are the `spans`
/// module's; this one is made here, where the run starts.)
#[cfg(feature = "tracing")]
fn run_span(run: RunId, workflow: &str, parent: Option<&tracing::Span>) -> tracing::Span {
    match parent {
        Some(parent) if !parent.is_disabled() => {
            tracing::info_span!(parent: parent, "cano.run", run_id = %run, workflow = workflow)
        }
        _ => tracing::info_span!("cano.run", run_id = %run, workflow = workflow),
    }
}

// What only the current run can answer: its durable data and its tasks' progress.
// They live here, beside the current run, so the checkpoint module does not depend on
// the run module that depends on it.

impl DurableStore {
    /// The durable store of the run the calling task belongs to.
    ///
    /// Fails with [`CanoError::Configuration`] outside a run, or in a run of a workflow
    /// without a checkpoint store (there is nowhere to save the data).
    pub fn current() -> Result<Self, CanoError> {
        let run = RunContext::current().ok_or_else(|| {
            CanoError::configuration("DurableStore::current was called outside a workflow run")
                .with_hint("call it from a task while the workflow runs it")
        })?;
        run.durable().cloned().ok_or_else(|| {
            CanoError::configuration(format!(
                "run {} has no durable store: its workflow has no checkpoint store",
                run.run_id()
            ))
            .with_hint("attach one with Workflow::with_checkpoint_store (an in-memory store will do in tests)")
        })
    }
}

impl TaskProgress {
    /// The progress of the task named `task` in the calling run's current state, if the
    /// run is checkpointed. Two tasks running in the same state at once (branches of a
    /// split) need distinct names, or they would share their progress.
    pub fn current(task: &str) -> Option<Self> {
        let run = RunContext::current()?;
        Some(Self::in_journal(run.journal_of()?.clone(), task))
    }
}

/// For extension crates: a run's checkpoint journal, in runs of a workflow with a
/// checkpoint store. Handlers that save progress of their own (stepped tasks) write
/// through it. Engine plumbing, outside the semver promise (the facade re-exports it
/// in `cano::ext` only); a task never needs it.
pub trait RunJournal {
    /// The run's journal, if its workflow has a checkpoint store.
    fn journal(&self) -> Option<&Arc<Journal>>;
}

impl RunJournal for RunContext {
    fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal_of()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunStart;

    #[test]
    fn run_ids_from_many_threads_are_distinct() {
        // Each thread draws from its own block of counters; blocks never overlap.
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..3_000).map(|_| RunId::new()).collect::<Vec<_>>()))
            .collect();
        let ids: std::collections::HashSet<RunId> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 12_000);
    }

    #[test]
    fn run_ids_are_distinct() {
        let ids: std::collections::HashSet<RunId> = (0..10_000).map(|_| RunId::new()).collect();
        assert_eq!(ids.len(), 10_000);
        assert_eq!(RunId::from(255).to_string(), "00000000000000ff");
        let id = RunId::new();
        assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        assert!("not hex".parse::<RunId>().is_err());
    }

    #[tokio::test]
    async fn cancelled_wakes_waiters_registered_before_and_after() {
        let token = CancellationToken::new();
        let early = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        tokio::task::yield_now().await;
        token.cancel();
        early.await.unwrap();
        token.cancelled().await; // already cancelled: returns at once
        token.cancel(); // idempotent
    }

    #[test]
    fn a_context_is_two_words() {
        assert_eq!(
            std::mem::size_of::<RunContext>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn plain_runs_share_their_workflows_record_and_other_runs_get_their_own() {
        let resources = Arc::new(crate::Resources::new().insert("store", MemoryStore::new()));
        let shared = SharedRuns::default();
        let start = |id: u64, start: RunStart| {
            RunContext::start(RunId::from(id), start, &resources, "wf", &shared)
        };
        let (a, b) = (start(1, RunStart::default()), start(2, RunStart::default()));
        let record = |run: &RunContext| Arc::as_ptr(run.shared.as_ref().unwrap());
        assert_eq!(record(&a), record(&b));
        assert!(Arc::ptr_eq(
            &a.resources::<crate::DefaultKey>().unwrap(),
            &resources
        ));
        assert!(a.cancellation_token().is_none() && a.hold_drain().is_none());

        // A cancellable run has its own record, with the resources too.
        let token = CancellationToken::new();
        let cancellable = RunStart {
            cancel: Some(token.clone()),
            ..RunStart::default()
        };
        let c = start(3, cancellable);
        assert_ne!(record(&c), record(&a));
        assert!(Arc::ptr_eq(
            &c.resources::<crate::DefaultKey>().unwrap(),
            &resources
        ));
        let guard = c.hold_drain().expect("a cancellable run can hold a drain");
        assert!(c.is_draining() && !a.is_draining());
        drop(guard);
        assert!(!c.is_draining());
        token.cancel();
        assert!(c.is_cancelled() && !a.is_cancelled() && !b.is_cancelled());

        // Other resources never get the workflow's shared record.
        let others = Arc::new(crate::Resources::new().insert("store", MemoryStore::new()));
        let d = RunContext::start(RunId::from(4), RunStart::default(), &others, "wf", &shared);
        assert!(Arc::ptr_eq(
            &d.resources::<crate::DefaultKey>().unwrap(),
            &others
        ));

        // A workflow without resources: nothing beyond the id.
        let empty = Arc::new(crate::Resources::<crate::DefaultKey>::empty());
        let e = RunContext::start(RunId::from(5), RunStart::default(), &empty, "wf", &shared);
        assert!(e.shared.is_none() && e.resources::<crate::DefaultKey>().is_none());
    }

    #[tokio::test]
    async fn current_is_visible_inside_scope_only() {
        assert!(RunContext::current().is_none());
        let ctx = RunContext::bare(RunId::from(7));
        let seen = ctx
            .scope(async { RunContext::current().map(|c| c.run_id()) })
            .await;
        assert_eq!(seen, Some(RunId::from(7)));
        assert!(RunContext::current().is_none());
    }

    fn current_id() -> Option<RunId> {
        RunContext::current().map(|c| c.run_id())
    }

    #[tokio::test]
    async fn scopes_nest_and_each_run_is_current_across_its_awaits() {
        let inner = RunContext::bare(RunId::from(2)).scope(async {
            let before = current_id();
            tokio::task::yield_now().await;
            (before, current_id())
        });
        let outer = RunContext::bare(RunId::from(1)).scope(async {
            let inner = inner.await;
            (inner, current_id())
        });
        let (inner, after_inner) = outer.await;
        assert_eq!(inner, (Some(RunId::from(2)), Some(RunId::from(2))));
        assert_eq!(after_inner, Some(RunId::from(1)));
        assert_eq!(current_id(), None);
    }

    #[tokio::test]
    async fn two_runs_polled_in_turn_on_one_thread_each_see_their_own() {
        let run = |id: u64| {
            RunContext::bare(RunId::from(id)).scope(async move {
                let mut seen = Vec::new();
                for _ in 0..3 {
                    seen.push(current_id());
                    tokio::task::yield_now().await;
                }
                seen
            })
        };
        let (a, b) = tokio::join!(run(1), run(2));
        assert!(a.iter().all(|id| *id == Some(RunId::from(1))), "{a:?}");
        assert!(b.iter().all(|id| *id == Some(RunId::from(2))), "{b:?}");
    }

    #[test]
    fn a_panic_inside_a_scope_leaves_no_current_run_behind() {
        let scoped = RunContext::bare(RunId::from(3)).scope(async { panic!("boom") });
        let mut scoped = std::pin::pin!(scoped);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = scoped.as_mut().poll(&mut cx);
        }));
        assert!(polled.is_err());
        assert_eq!(current_id(), None);
    }
}
