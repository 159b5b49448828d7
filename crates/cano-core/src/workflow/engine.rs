//! The engine: drives a run from its initial state to an exit state.
//!
//! Per transition it finds the next state's slot (handler and exit flag together; by the
//! hint the previous slot keeps, or one map lookup), runs the handler, and moves on. A
//! plain task's first attempt is awaited inline; its future is the only heap
//! allocation. Observers and cancellation cost a branch each when absent.
//!
//! A run without resources to manage, compensations, a workflow timeout or a token
//! is light: the state loop alone, in a small future. A full run has those layers
//! around the loop and is boxed when its caller awaits it (inline when spawned).

// Futures that are part of every run are written as `fn -> impl Future` returning an
// `async move` block: an `async fn` keeps its arguments twice in its state
// (rust-lang/rust#62958), which would grow every run and every split branch.
#![allow(clippy::manual_async_fn)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::Either;

use super::bounds::{Bounded, Caught, Stop};
use super::compensation::{Compensations, resumed_failure};
use super::handle::RunHandle;
use super::handler::{StateContext, TaskEnv};
use super::{Handler, ResourceLifecycle, Slot, Workflow, WorkflowState, hinted};
use crate::checkpoint::Journal;
use crate::error::CanoError;
use crate::observer::Interest;
use crate::resource::ResourceKey;
use crate::run::{CancellationToken, RunContext, RunId, RunOptions, RunStart};
use crate::task::{RegisteredTask, TaskResult};
use crate::workflow::execute::{
    FirstAttempt, InRun, PlainAttempt, after_first_attempt, execute_task,
};

/// The boxed start of a run that does not take the plain path.
type StartFuture<'a, S> = Pin<Box<dyn Future<Output = Result<S, CanoError>> + Send + 'a>>;

/// How many transitions a run makes between two visits to tokio's cooperative budget.
const BUDGET_EVERY: u32 = 16;

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// Runs the workflow from `initial` until it reaches an exit state, and returns
    /// that state.
    ///
    /// Resources are set up before the first state and torn down after the last (see
    /// [`ResourceLifecycle`]). Fails with the first error a state returns, after any
    /// retries its task's config allows.
    pub fn orchestrate(&self, initial: S) -> impl Future<Output = Result<S, CanoError>> + '_ {
        self.orchestrate_with(initial, RunOptions::default())
    }

    /// Like [`orchestrate`](Self::orchestrate), with a chosen run id and/or a
    /// cancellation token.
    ///
    /// ```
    /// use cano_core::{CancellationToken, CanoError, RunOptions, Task, TaskResult, Workflow};
    ///
    /// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    /// enum S { Wait, Done }
    /// struct Forever;
    /// #[async_trait::async_trait]
    /// impl Task<S> for Forever {
    ///     async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
    ///         std::future::pending().await
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let workflow = Workflow::bare().register(S::Wait, Forever).add_exit_state(S::Done);
    /// let token = CancellationToken::new();
    /// token.cancel();
    /// let err = workflow
    ///     .orchestrate_with(S::Wait, RunOptions::new().with_cancellation(token))
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, CanoError::Cancelled(_)));
    /// # }
    /// ```
    pub fn orchestrate_with(
        &self,
        initial: S,
        options: RunOptions,
    ) -> impl Future<Output = Result<S, CanoError>> + '_ {
        match self.begin(initial, options) {
            Either::Left(boxed) => Either::Left(boxed),
            Either::Right(Either::Left(light)) => Either::Right(light),
            // Boxed: with its resources, timeout, token or compensations a full run is
            // larger than a light one, and every light run would carry (and copy)
            // that room. A full run already allocates more than this box. (A spawned
            // run keeps it inline: it is moved once, into its task.)
            Either::Right(Either::Right(full)) => {
                Either::Left(Box::pin(full) as StartFuture<'_, S>)
            }
        }
    }

    /// The start of a run: what it needs is made here, so that its future carries
    /// only that. The rare runs that fail validation or write checkpoints are boxed
    /// (left); the others are light or full (right: left or right).
    // The two `impl Future`s cannot be named by a type alias on stable Rust.
    #[allow(clippy::type_complexity)]
    fn begin(
        &self,
        initial: S,
        options: RunOptions,
    ) -> Either<
        StartFuture<'_, S>,
        Either<
            impl Future<Output = Result<S, CanoError>> + Send + '_,
            impl Future<Output = Result<S, CanoError>> + Send + '_,
        >,
    > {
        let spec = &*self.spec;
        if let Err(invalid) = self.validate() {
            return Either::Left(Box::pin(std::future::ready(Err(invalid))));
        }
        if let Some(checkpointing) = &spec.checkpoint {
            // Lazily: the run claims its id when it is first polled, not when built.
            return Either::Left(Box::pin(async move {
                self.start_checkpointed(checkpointing, initial, options)
                    .await
            }));
        }
        let run_id = options.run_id.unwrap_or_default();
        let light = self.is_light() && options.cancel.is_none();
        let run = self.run_context(run_id, options.cancel, None);
        if light {
            // (A full run asks its observers' interest in `run_observed`.)
            let heard = spec.observers.interest();
            return Either::Right(Either::Left(self.run_light(initial, run, heard)));
        }
        // Boxed: a workflow without compensatable states carries one null pointer.
        let saga = spec.compensating.then(|| Box::new(Compensations::new()));
        Either::Right(Either::Right(async move {
            let mut state = initial;
            let outcome = self
                .run_observed(&mut state, &run, None, saga.as_deref())
                .await;
            outcome.map(|()| state)
        }))
    }

    /// Whether a run without a token is light: nothing to set up or tear down, no
    /// compensations and no workflow timeout. Such a run is the state loop alone, with
    /// its observers told (see [`run_light`](Self::run_light)).
    fn is_light(&self) -> bool {
        let spec = &*self.spec;
        !spec.compensating && spec.timeout.is_none() && !self.manages_resources()
    }

    /// A light run: the state loop in the run's scope, a panic in it caught and named,
    /// the run observers told of its start and end. Without the layers a full run
    /// needs (resources, rollback, timeout, token) each poll goes through fewer
    /// futures, and the run does less at its start and end.
    fn run_light(
        &self,
        initial: S,
        run: RunContext,
        heard: Interest,
    ) -> impl Future<Output = Result<S, CanoError>> + '_ {
        async move {
            let mut state = initial;
            if heard.contains(Interest::RUNS) {
                self.tell_run_start(&run, &state);
            }
            let stop = {
                let states = std::pin::pin!(self.drive(&mut state, &run, None, heard));
                run.clone().scope(Caught(states)).await
            };
            let outcome = self.stopped(stop, &state, &run);
            if heard.contains(Interest::RUNS) {
                self.tell_run_end(&run, &outcome, &state);
            }
            outcome.map(|()| state)
        }
    }

    /// The context of a new run: its token, its journal when checkpointed, an
    /// outputs store when a handler publishes results, the workflow's resources.
    #[inline]
    pub(crate) fn run_context(
        &self,
        run_id: RunId,
        cancel: Option<CancellationToken>,
        journal: Option<Arc<Journal>>,
    ) -> RunContext {
        let spec = &*self.spec;
        let start = RunStart {
            cancel,
            outputs: spec.outputs.then(crate::MemoryStore::for_run),
            journal,
            #[cfg(feature = "tracing")]
            parent_span: spec.tracing_span.clone(),
        };
        RunContext::start(
            run_id,
            start,
            &spec.resources,
            &spec.recovery.workflow_id,
            &spec.shared_runs,
        )
    }

    /// A run between its observers' `run_started` (and `resumed`) and `run_ended`.
    // Inlined, as is `run_states`: returned from a call, the run body (about 500 B)
    // was built on the stack and copied twice into the run's future on first poll.
    #[inline(always)]
    pub(crate) fn run_observed<'a>(
        &'a self,
        state: &'a mut S,
        run: &'a RunContext,
        resumed: Option<u64>,
        saga: Option<&'a Compensations<S>>,
    ) -> impl Future<Output = Result<(), CanoError>> + 'a {
        // Told before the future exists (the caller builds it as the run starts), so
        // the future does not carry what only the start needs.
        let observers = &self.spec.observers;
        let heard = observers.interest();
        if heard.contains(Interest::RUNS) {
            self.tell_run_start(run, state);
        }
        if let Some(seq) = resumed {
            crate::spans::in_run(run, || {
                observers.each(|o| {
                    o.resumed(run.run_id(), &self.spec.recovery.workflow_id, &*state, seq)
                });
            });
        }
        async move {
            let outcome = run
                .clone()
                .scope(self.run_states(state, run, saga, heard))
                .await;
            if heard.contains(Interest::RUNS) {
                self.tell_run_end(run, &outcome, state);
            }
            outcome
        }
    }

    /// Tells the run observers that `run` starts in `state`.
    fn tell_run_start(&self, run: &RunContext, state: &S) {
        let observers = &self.spec.observers;
        crate::spans::in_run(run, || {
            observers.each(|o| o.run_started(run.run_id(), state))
        });
    }

    /// Tells the run observers how `run` ended (in `state`, when it succeeded).
    fn tell_run_end(&self, run: &RunContext, outcome: &Result<(), CanoError>, state: &S) {
        let observers = &self.spec.observers;
        let view = outcome.as_ref().map(|()| state as &dyn std::fmt::Debug);
        crate::spans::in_run(run, || observers.each(|o| o.run_ended(run.run_id(), view)));
    }

    /// Starts a run on the tokio runtime and returns a handle to await or cancel it.
    ///
    /// Must be called from within a tokio runtime.
    pub fn spawn(&self, initial: S) -> RunHandle<S> {
        let token = CancellationToken::new();
        let run_id = RunId::new();
        let options = RunOptions::new()
            .with_run_id(run_id)
            .with_cancellation(token.clone());
        let join = tokio::spawn(self.clone().spawned(initial, options));
        RunHandle::new(join, token, run_id)
    }

    /// What a spawned run's task holds: every kind of run inline (see
    /// `orchestrate_with`), as the future is moved once, into its task.
    pub(crate) fn spawned(
        self,
        initial: S,
        options: RunOptions,
    ) -> impl Future<Output = Result<S, CanoError>> + Send + 'static {
        async move { self.begin(initial, options).await }
    }

    /// Resource lifecycle around the bounded state loop, and the rollback of a run
    /// that failed after completing compensatable steps (resources are still up then).
    #[inline(always)]
    fn run_states<'a>(
        &'a self,
        state: &'a mut S,
        run: &'a RunContext,
        saga: Option<&'a Compensations<S>>,
        heard: Interest,
    ) -> impl Future<Output = Result<(), CanoError>> + 'a {
        async move {
            let managed = self.manages_resources();
            if managed {
                self.spec.resources.setup_all().await?;
            }
            // A run resumed in the middle of its rollback does not go forward again.
            // (An `if let` scrutinee is dropped before `else`: no string held across it.)
            let stop = if let Some(message) = saga.and_then(Compensations::resumed_rollback) {
                Stop::Finished(Err(resumed_failure(run.run_id(), &message)))
            } else {
                // One await of the loop, so its future takes room in one place only.
                // Both built where they stay (moving a future copies all of it).
                let states = std::pin::pin!(self.drive(state, run, saga, heard));
                std::pin::pin!(Bounded::new(states, run, &self.spec.timeout)).await
            };
            let outcome = self.stopped(stop, state, run);
            self.wind_up(outcome, run, saga, managed).await
        }
    }

    /// Whether each run sets the resources up and tears them down.
    fn manages_resources(&self) -> bool {
        self.spec.lifecycle == ResourceLifecycle::PerRun && !self.spec.resources.is_empty()
    }

    /// The error a stop means, naming the state the run stopped in.
    #[inline]
    fn stopped(&self, stop: Stop, state: &S, run: &RunContext) -> Result<(), CanoError> {
        match stop {
            Stop::Finished(Ok(())) => Ok(()),
            early => self.stopped_early(early, state, run),
        }
    }

    /// A run stopped in error: a state failed, or the run timed out, was cancelled or
    /// panicked. Observers hear of a timeout and of a cancellation here, once per run.
    #[cold]
    #[inline(never)]
    fn stopped_early(&self, stop: Stop, state: &S, run: &RunContext) -> Result<(), CanoError> {
        let observers = &self.spec.observers;
        match stop {
            Stop::Finished(Err(error)) => {
                if matches!(error, CanoError::Cancelled(_)) && !observers.is_empty() {
                    observers.each(|o| o.cancelled(run.run_id(), state));
                }
                Err(error)
            }
            Stop::Finished(Ok(())) => Ok(()),
            Stop::TimedOut { limit, elapsed } => {
                if !observers.is_empty() {
                    observers.each(|o| o.timed_out(run.run_id(), state, elapsed, limit));
                }
                Err(
                    CanoError::workflow(format!("workflow timed out after {limit:?}"))
                        .at(state, &self.label(state))
                        .with_hint(
                            "raise Workflow::with_timeout, or make this state's task faster",
                        ),
                )
            }
            Stop::Cancelled => {
                if !observers.is_empty() {
                    observers.each(|o| o.cancelled(run.run_id(), state));
                }
                Err(self.cancelled(state, run))
            }
            Stop::Panicked(panic) => {
                let task = self.label(state);
                let error = CanoError::from_panic(panic).at(state, &task);
                // Only a plain task's first attempt runs unguarded in the loop.
                if !observers.is_empty() {
                    observers.each(|o| o.task_failed(run.run_id(), state, &task, &error));
                }
                Err(error)
            }
        }
    }

    /// After the states: the rollback of a run that failed after completing
    /// compensatable steps (resources are still up then), and the teardown. A future of
    /// its own, so that what it holds shares room with the state loop's future.
    fn wind_up<'a>(
        &'a self,
        mut outcome: Result<(), CanoError>,
        run: &'a RunContext,
        saga: Option<&'a Compensations<S>>,
        managed: bool,
    ) -> impl Future<Output = Result<(), CanoError>> + 'a {
        async move {
            // A run handed back is not over: whoever resumes it goes on, so nothing of
            // it is undone here.
            // Nor is a parked run: it goes on once woken.
            if let Some(saga) = saga.filter(|s| outcome.is_err() && s.must_roll_back())
                && !run.is_handed_back()
                && !matches!(outcome, Err(CanoError::Parked(_)))
                && let Err(original) = outcome
            {
                outcome = Err(self.roll_back(saga, run, original).await);
            }
            if managed {
                let teardown = self.spec.resources.try_teardown_all().await;
                // A run's own error matters more than a teardown error after it.
                if let (Ok(()), Err(e)) = (&outcome, teardown) {
                    return Err(e);
                }
            }
            outcome
        }
    }

    /// The state loop.
    fn drive<'a>(
        &'a self,
        state: &'a mut S,
        run: &'a RunContext,
        saga: Option<&'a Compensations<S>>,
        heard: Interest,
    ) -> impl Future<Output = Result<(), CanoError>> + 'a {
        async move {
            // (The spec and its parts are reached through `self` each time: locals
            // would be kept, a pointer each, in every run's future.)
            let mut env: Option<Box<TaskEnv<K>>> = None;
            // `plain`: no spans to record or journal to write, so a direct slot's task
            // takes the hot path. `lean`: nothing to check or tell between states
            // either (no token, no observer of states or tasks).
            let (plain, lean, single, before) = self.fast_paths(run, heard);
            let mut transitions: u32 = 0;
            // Every slot the loop enters runs a handler or ends the run: a slot with
            // neither (only declared transitions) fails validation, so no run starts.
            // A state without a slot is refused as it is reached, so the error can name
            // the task that chose it.
            let Some(mut slot) = hinted(&self.spec.slots, &self.spec.start_hint, state) else {
                return Err(self.unregistered(state, None));
            };
            loop {
                if slot.exit {
                    return Ok(());
                }
                // Tasks that finish without ever waiting would otherwise keep the thread
                // forever in a cyclic workflow; spending tokio's budget yields now and
                // then so timeouts, cancellation and other tasks get their turn. Once
                // every few transitions: asking tokio costs more than a trivial task.
                // (Before the state's task: an await after it would keep its `next` in
                // the run's future.)
                transitions = transitions.wrapping_add(1);
                if transitions.is_multiple_of(BUDGET_EVERY) {
                    tokio::task::consume_budget().await;
                }
                let next = 'state: {
                    // The hot path: a direct slot's task (no breaker, limiter or timeout,
                    // no declared targets to check; see `Slot::direct`) in a run without
                    // spans or a journal, awaited right here. Its first attempt names the
                    // next state, or fails and goes on to the task's retries. Only a
                    // failure builds the retry loop, boxed: it is much larger than the
                    // inline attempt, and every run's future would carry its room. A
                    // panic is caught around the whole loop (see `Bounded`): catching it
                    // here would copy every result once more.
                    if let Some(entry) = slot.direct() {
                        // (The result is taken apart in the `let`, so that it is not kept
                        // in the run's future across the retries' await.)
                        if lean {
                            // Nothing to check or tell: just the task.
                            let other = match PlainAttempt(entry.run(&self.spec.resources)).await {
                                FirstAttempt::Next(next) => break 'state next,
                                FirstAttempt::Other(other) => other,
                            };
                            break 'state Box::pin(self.after_plain(other, entry, state, run))
                                .await?;
                        }
                        if plain {
                            // The same, with cancellation and observers.
                            if run.is_cancelled() {
                                return Err(self.cancelled(state, run));
                            }
                            self.tell_before(single, before, run.run_id(), state, entry.name());
                            let other = match PlainAttempt(entry.run(&self.spec.resources)).await {
                                FirstAttempt::Next(next) => {
                                    if heard.contains(Interest::TASK_SUCCESSES) {
                                        self.tell(single, |o| {
                                            o.task_succeeded(run.run_id(), state, entry.name())
                                        });
                                    }
                                    break 'state next;
                                }
                                FirstAttempt::Other(other) => other,
                            };
                            break 'state Box::pin(self.after_plain(other, entry, state, run))
                                .await?;
                        }
                    }
                    // Every other state: its handler, with spans, checkpoints and
                    // guards. (Validation refused a slot without a handler; the `else`
                    // is only a guard.)
                    let Some(handler) = &slot.handler else {
                        return Err(self.unregistered(state, None));
                    };
                    if run.is_cancelled() {
                        return Err(self.cancelled(state, run));
                    }
                    if heard.contains(Interest::STATES) {
                        self.tell(single, |o| o.state_entered(run.run_id(), state));
                    }
                    if let Some(journal) = run.journal_of()
                        && handler.writes_checkpoint()
                    {
                        self.checkpoint_enter(journal, state, run)
                            .await
                            .map_err(|e| e.at(state, &handler.label()))?;
                    }
                    let next = match handler {
                        Handler::Task(entry) => {
                            let result = crate::spans::await_in_state!(
                                execute_task(
                                    entry,
                                    state,
                                    InRun {
                                        spec: &self.spec,
                                        run
                                    }
                                ),
                                state,
                                run
                            )?;
                            self.single(result, state, entry.name())?
                        }
                        Handler::Custom(custom) => {
                            // Boxed on first use: only custom handlers need it,
                            // and other runs carry one pointer, not all of it.
                            let env = env.get_or_insert_with(|| {
                                Box::new(TaskEnv {
                                    resources: self.spec.resources.clone(),
                                    run: run.clone(),
                                    observers: self.spec.observers.clone(),
                                })
                            });
                            let label = || handler.label();
                            let handled = custom.handle(StateContext { state, env, saga });
                            let mut result = crate::spans::state(handled, state, run).await;
                            // A step that recorded its output joins the
                            // compensation stack, even if its handler then
                            // failed: its work was done.
                            if let Some(saga) = saga.filter(|s| s.has_recorded()) {
                                result = self.push_completed(saga, state, result, run).await;
                            }
                            result.map_err(|e| e.at(state, &label()))?
                        }
                    };
                    if let Some(targets) = &slot.targets
                        && !targets.contains(&next)
                    {
                        return Err(self.undeclared(state, &next, targets, handler));
                    }
                    next
                };
                let reached = slot.next(&self.spec.slots, &next);
                *state = next;
                let Some(reached) = reached else {
                    return Err(self.unregistered(state, Some(slot)));
                };
                slot = reached;
            }
        }
    }

    /// A plain task's first attempt that did not simply name the next state: a failure
    /// goes on to the retries the task's config allows, a split is refused.
    fn after_plain<'a>(
        &'a self,
        first: Result<TaskResult<S>, CanoError>,
        entry: &'a RegisteredTask<S, K>,
        state: &'a S,
        run: &'a RunContext,
    ) -> impl Future<Output = Result<S, CanoError>> + 'a {
        async move {
            let (resources, observers) = (&self.spec.resources, &self.spec.observers);
            let result =
                after_first_attempt(first, entry, state, resources, run, observers).await?;
            self.single(result, state, entry.name())
        }
    }

    /// The next state a single task chose; a split is refused.
    fn single(&self, result: TaskResult<S>, state: &S, task: &str) -> Result<S, CanoError> {
        match result {
            TaskResult::Single(next) => Ok(next),
            TaskResult::Split(_) => Err(CanoError::workflow(
                "a single-task state returned TaskResult::Split",
            )
            .at(state, task)
            .with_hint(
                "register the state with register_split to run tasks in parallel, or return TaskResult::Single",
            )),
        }
    }

    fn label(&self, state: &S) -> String {
        match self
            .spec
            .slots
            .get(state)
            .and_then(|slot| slot.handler.as_ref())
        {
            Some(handler) => handler.label().into_owned(),
            None => String::new(),
        }
    }

    #[cold]
    fn cancelled(&self, state: &S, run: &RunContext) -> CanoError {
        let message = if run.is_handed_back() {
            "the run was handed back: it stopped here without failing, and its next owner resumes it from its last checkpoint"
        } else {
            "the run was cancelled"
        };
        CanoError::cancelled(message).at(state, &self.label(state))
    }

    fn undeclared(&self, state: &S, next: &S, targets: &[S], handler: &Handler<S, K>) -> CanoError {
        CanoError::workflow(format!(
            "moved to {next:?}, which is not among the transitions declared for this state ({targets:?})"
        ))
        .at(state, &handler.label())
        .with_hint("declare the transition with Workflow::transitions, or fix the task")
    }

    /// `came_from` is the slot of the state the run left to reach `state`.
    fn unregistered(&self, state: &S, came_from: Option<&Slot<S, K>>) -> CanoError {
        let origin = match came_from.and_then(|slot| slot.handler.as_ref()) {
            Some(handler) => format!(", reached from task `{}`", handler.label()),
            None => " (the initial state)".to_owned(),
        };
        CanoError::workflow(format!("no handler is registered for this state{origin}"))
            .at(state, "")
            .with_hint("register a task for it with .register(state, task), or make it an exit state with .add_exit_state(state)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Task;

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Step(u8);

    struct Next;

    #[async_trait::async_trait]
    impl Task<Step> for Next {
        async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
            Ok(TaskResult::Single(Step(1)))
        }
    }

    #[test]
    fn a_spawned_run_fits_a_640_byte_tokio_task_cell() {
        // tokio puts a task's future in a cell with a 128-byte header and a trailer;
        // a future over 536 bytes makes the cell 768 bytes instead of 640, and every
        // run in flight pays the difference (1081 -> 1218 B per run, measured).
        let workflow = Workflow::bare()
            .register(Step(0), Next)
            .add_exit_state(Step(1));
        let spawned = workflow.spawned(Step(0), RunOptions::default());
        let size = std::mem::size_of_val(&spawned);
        // 472 bytes today; 520 with the tracing feature, where a run also carries
        // its span.
        assert!(
            size <= 536,
            "a spawned run is {size} bytes; keep it <= 536 (these sizes come from rustc's layout and tokio's task cell: after a toolchain or tokio upgrade moves them, re-measure with `cargo xtask bench` and either win the bytes back or raise the bound here, saying why in the commit)"
        );
    }
}
