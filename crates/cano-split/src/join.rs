//! The split handler: spawns the branches (all at once, or as the bulkhead allows),
//! tallies what comes back, and stops the moment the strategy is decided.

// `run_branch` returns an `async move` block instead of being an `async fn`, which
// would store its arguments twice in every spawned branch (rust-lang/rust#62958).
#![allow(clippy::manual_async_fn)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use cano_core::{
    CanoError, HandlerFuture, HandlerInfo, RegisteredTask, ResourceKey, Resources, StateContext,
    StateHandler, TaskEnv, TaskResult, WorkflowState,
};
use futures::FutureExt;
use tokio::task::JoinSet;

use crate::branches::Branches;
use crate::config::JoinConfig;
use crate::result::{BranchOutcome, BranchReport, SplitResult};
use crate::strategy::{MAX_BRANCHES, Tally, Verdict};

/// Decides a dynamic split's branches from the run's resources.
pub(crate) type Planner<S, K> =
    Box<dyn Fn(&Resources<K>) -> Result<Branches<S, K>, CanoError> + Send + Sync>;

/// Where a split's branches come from.
pub(crate) enum Source<S, K> {
    /// The same tasks on every run.
    Fixed(Arc<[RegisteredTask<S, K>]>),
    /// Tasks chosen at run time, one per input item for example.
    Planned(Planner<S, K>),
}

pub(crate) struct SplitHandler<S, K> {
    pub(crate) source: Source<S, K>,
    pub(crate) config: JoinConfig<S>,
    /// Where the join's outcome is published in the run's outputs (see
    /// [`SplitResult`]): formatted once, at registration, not on every run.
    pub(crate) output_key: String,
}

impl<S: WorkflowState, K: ResourceKey> StateHandler<S, K> for SplitHandler<S, K> {
    fn handle<'a>(&'a self, cx: StateContext<'a, S, K>) -> HandlerFuture<'a, S> {
        Box::pin(async move {
            let state = cx.state();
            let tasks = match &self.source {
                Source::Fixed(tasks) => tasks.clone(),
                Source::Planned(plan) => plan_branches(plan, cx.resources(), state)?,
            };
            if let Some(problem) = self.config.strategy().check_count(tasks.len()) {
                return Err(CanoError::configuration(format!(
                    "split state {state:?}: {problem}"
                )));
            }
            let result = join(state, cx.env(), tasks, &self.config).await?;
            if let Some(outputs) = cx.run().outputs() {
                outputs.put(self.output_key.clone(), result)?;
            }
            Ok(self.config.join_state().clone())
        })
    }

    fn info(&self) -> HandlerInfo {
        let tasks = match &self.source {
            Source::Fixed(tasks) => tasks.iter().map(|t| t.name().clone()).collect(),
            Source::Planned(_) => vec!["(planned at run time)".into()],
        };
        HandlerInfo {
            kind: "split",
            tasks,
        }
    }

    fn check(&self) -> Vec<String> {
        let mut problems = self.config.check();
        if let Source::Fixed(tasks) = &self.source {
            if tasks.is_empty() {
                problems
                    .push("it has no branches; give register_split at least one task".to_owned());
            } else if let Some(problem) = self.config.strategy().check_count(tasks.len()) {
                problems.push(problem);
            }
        }
        problems
    }

    fn targets(&self) -> Option<Vec<S>> {
        Some(vec![self.config.join_state().clone()])
    }
}

fn plan_branches<S: WorkflowState, K: ResourceKey>(
    plan: &Planner<S, K>,
    resources: &Resources<K>,
    state: &S,
) -> Result<Arc<[RegisteredTask<S, K>]>, CanoError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| plan(resources))) {
        Ok(Ok(branches)) => Ok(branches.tasks.into()),
        Ok(Err(error)) => Err(error.at(state, "split planner")),
        Err(payload) => Err(CanoError::from_panic(payload).at(state, "split planner")),
    }
}

/// What every branch of one split shares, behind one `Arc`: spawning a branch costs a
/// reference count, not a copy of the state and environment.
struct Shared<S, K> {
    state: S,
    env: TaskEnv<K>,
    tasks: Arc<[RegisteredTask<S, K>]>,
}

/// A finished branch: its index (a `u32`, see [`MAX_BRANCHES`]) and its result.
type Finished<S> = (u32, Result<TaskResult<S>, CanoError>);

fn spawn_branch<S: WorkflowState, K: ResourceKey>(
    set: &mut JoinSet<Finished<S>>,
    shared: &Arc<Shared<S, K>>,
    index: usize,
) {
    // The handler checked the count against `MAX_BRANCHES`, so the index fits.
    debug_assert!(index <= MAX_BRANCHES);
    set.spawn(branch(Arc::clone(shared), index as u32));
}

/// A branch as it is spawned: inside the run's scope, so the branch's task sees
/// `RunContext::current()`.
fn branch<S: WorkflowState, K: ResourceKey>(
    shared: Arc<Shared<S, K>>,
    index: u32,
) -> impl std::future::Future<Output = Finished<S>> {
    shared.env.run().clone().scope(run_branch(shared, index))
}

/// One branch: its task run like any registered task (retries, attempt timeout,
/// observers), a panic anywhere in it caught as its failure, and its index beside the
/// result. One `async move` block holds the index once and keeps the spawned future
/// small enough for tokio's smallest task cell (256 bytes): combinators around it
/// would each keep a copy of what they need and push the cell to the next size.
fn run_branch<S: WorkflowState, K: ResourceKey>(
    shared: Arc<Shared<S, K>>,
    index: u32,
) -> impl std::future::Future<Output = Finished<S>> {
    async move {
        let task = shared
            .env
            .run_registered(&shared.state, &shared.tasks[index as usize]);
        let result = match AssertUnwindSafe(task).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(CanoError::from_panic(panic)),
        };
        (index, result)
    }
}

/// Runs the branches until the strategy decides; the branches still running then are
/// aborted when the `JoinSet` is dropped on the way out.
async fn join<S: WorkflowState, K: ResourceKey>(
    state: &S,
    env: &TaskEnv<K>,
    tasks: Arc<[RegisteredTask<S, K>]>,
    config: &JoinConfig<S>,
) -> Result<SplitResult<S>, CanoError> {
    let total = tasks.len();
    let strategy = config.strategy();
    let shared = Arc::new(Shared {
        state: state.clone(),
        env: env.clone(),
        tasks,
    });
    let mut outcomes: Vec<Option<BranchOutcome<S>>> = (0..total).map(|_| None).collect();
    let mut set = JoinSet::new();
    let limit = config.bulkhead().unwrap_or(total).min(total);
    for index in 0..limit {
        spawn_branch(&mut set, &shared, index);
    }
    let mut started = limit;
    let mut tally = Tally {
        total,
        ..Tally::default()
    };
    let mut first_failure = None;
    let mut timer = config.timeout().map(|t| Box::pin(tokio::time::sleep(t)));
    let timed_out = loop {
        match strategy.decide(tally) {
            Verdict::Proceed => break false,
            Verdict::Fail => {
                return Err(strategy_failed(
                    config,
                    tally,
                    started,
                    first_failure,
                    &mut outcomes,
                ));
            }
            Verdict::Wait => {}
        }
        let joined = match &mut timer {
            None => set.join_next().await,
            Some(timer) => tokio::select! {
                biased;
                joined = set.join_next() => joined,
                () = timer.as_mut() => {
                    if strategy == crate::JoinStrategy::PartialTimeout
                        && tally.succeeded + tally.failed > 0
                    {
                        break true;
                    }
                    return Err(timed_out(config, tally, started));
                }
            },
        };
        let (index, result) = match joined {
            Some(Ok(finished)) => finished,
            Some(Err(_)) => {
                // Every branch catches its own panics, so only a runtime shutting down
                // can end one without a result.
                return Err(CanoError::cancelled(
                    "a split branch was aborted because the tokio runtime is shutting down",
                )
                .with_hint("keep the runtime running until the workflow finishes"));
            }
            // Unreachable while the verdict is `Wait` (it implies unfinished branches);
            // treat it as the strategy having nothing more to wait for.
            None => break false,
        };
        outcomes[index as usize] = Some(match result {
            Ok(value) => {
                tally.succeeded += 1;
                BranchOutcome::Succeeded(value)
            }
            Err(error) => {
                tally.failed += 1;
                first_failure.get_or_insert(index as usize);
                BranchOutcome::Failed(error)
            }
        });
        if started < total && strategy.decide(tally) == Verdict::Wait {
            spawn_branch(&mut set, &shared, started);
            started += 1;
        }
    };
    set.abort_all();
    let branches = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| BranchReport {
            task: shared.tasks[index].name().clone(),
            outcome: outcome.unwrap_or(if index < started {
                BranchOutcome::Cancelled
            } else {
                BranchOutcome::NotStarted
            }),
        })
        .collect();
    Ok(SplitResult {
        strategy,
        branches,
        timed_out,
    })
}

/// "3 succeeded, 1 failed, 2 still running" (and how many never started, if any).
fn counts(tally: Tally, started: usize) -> String {
    let running = started - tally.succeeded - tally.failed;
    let waiting = tally.total - started;
    let mut text = format!(
        "{} succeeded, {} failed, {running} still running",
        tally.succeeded, tally.failed
    );
    if waiting > 0 {
        text.push_str(&format!(", {waiting} not started"));
    }
    text.push_str(&format!(" of {} branches", tally.total));
    text
}

/// The split's timeout passed before its strategy was met (or, under
/// `PartialTimeout`, before any branch finished): a `Workflow` error, as in cano 0.13.
fn timed_out<S>(config: &JoinConfig<S>, tally: Tally, started: usize) -> CanoError {
    let limit = config.timeout().unwrap_or(Duration::ZERO);
    CanoError::workflow(format!(
        "split timeout exceeded: it did not join within {limit:?} under {}: {}",
        config.strategy(),
        counts(tally, started)
    ))
    .with_hint("raise JoinConfig::with_timeout, make the branches faster, or use a strategy that needs fewer of them (Quorum, PartialResults, PartialTimeout)")
}

fn strategy_failed<S>(
    config: &JoinConfig<S>,
    tally: Tally,
    started: usize,
    first_failure: Option<usize>,
    outcomes: &mut [Option<BranchOutcome<S>>],
) -> CanoError {
    let first = first_failure.and_then(|i| match outcomes[i].take() {
        Some(BranchOutcome::Failed(error)) => Some(error),
        _ => None,
    });
    let strategy = config.strategy();
    match first {
        // A cancelled run stays a cancelled run.
        Some(error @ CanoError::Cancelled(_)) => error,
        first => {
            let needed = strategy
                .successes_needed(tally.total)
                .unwrap_or(tally.total);
            // A `Workflow` error, as in cano 0.13; the first branch error is its source.
            let mut error = CanoError::workflow(format!(
                "join condition not met: split can no longer reach {strategy} ({needed} successes needed): {}{}",
                counts(tally, started),
                first.as_ref().map(|e| format!("; first error: {e}")).unwrap_or_default()
            ))
            .with_hint("the first branch error is the source; fix the failing branches, give them retries in their TaskConfig, or lower what the strategy needs");
            if first.as_ref().is_some_and(CanoError::is_permanent) {
                error = error.permanent();
            }
            match first {
                Some(first) => error.with_source(first),
                None => error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cano_core::DefaultKey;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_spawned_branch_fits_tokios_smallest_task_cell() {
        // tokio keeps a task's future beside a tag. Up to 120 bytes the whole task is
        // one 256-byte cell, the same as a bare `JoinSet` spawn of a boxed future; at
        // 104 bytes the future and its tag (112) are also moved with inline stores
        // where a larger one goes through a call to memcpy, several times per branch.
        let size = returned_size(branch::<u32, DefaultKey>);
        assert!(
            size <= 104,
            "a spawned branch is {size} bytes; keep it <= 104 (these sizes come from rustc's layout and tokio's task cell: after a toolchain or tokio upgrade moves them, re-measure with `cargo xtask bench` and either win the bytes back or raise the bound here, saying why in the commit)"
        );
    }
}
