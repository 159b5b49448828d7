//! [`SplitResult`]: what each branch of a split did, for the states after it to read.

use std::borrow::Cow;
use std::fmt::Debug;
use std::sync::Arc;

use cano_core::{CanoError, RunContext, TaskResult};

use crate::strategy::{JoinStrategy, Tally};

/// How one branch ended.
#[derive(Debug)]
pub enum BranchOutcome<S> {
    /// The branch succeeded and returned this.
    Succeeded(TaskResult<S>),
    /// The branch failed (after its own retries), or panicked.
    Failed(CanoError),
    /// The branch was running when the join decided, and was cancelled.
    Cancelled,
    /// The branch was waiting for a bulkhead slot when the join decided; it never ran.
    NotStarted,
}

/// One branch of a split: its task's name and how it ended.
#[derive(Debug)]
pub struct BranchReport<S> {
    /// The branch's task name.
    pub task: Cow<'static, str>,
    /// How it ended.
    pub outcome: BranchOutcome<S>,
}

/// The outcome of a split state that joined: every branch, in the order the branches
/// were given, each exactly once.
///
/// The split publishes it in the run's outputs; a later state of the same run reads it
/// with [`SplitResult::of`]:
///
/// ```no_run
/// use cano_core::{CanoError, Task, TaskResult};
/// use cano_split::SplitResult;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// enum Step { Fetch, Merge, Done }
///
/// struct Merge;
/// #[async_trait::async_trait]
/// impl Task<Step> for Merge {
///     async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
///         let fetched = SplitResult::<Step>::of(&Step::Fetch)?;
///         println!("{} of {} sources answered", fetched.succeeded().count(), fetched.len());
///         Ok(TaskResult::Single(Step::Done))
///     }
/// }
/// ```
#[derive(Debug)]
pub struct SplitResult<S> {
    pub(crate) strategy: JoinStrategy,
    pub(crate) branches: Vec<BranchReport<S>>,
    pub(crate) timed_out: bool,
}

impl<S: Debug + Send + Sync + 'static> SplitResult<S> {
    /// The result of split state `state` in the current run (the latest, if the run
    /// passed through it more than once).
    ///
    /// Fails with [`CanoError::Store`] when called outside a run, or before that split
    /// has joined in this run.
    pub fn of(state: &S) -> Result<Arc<Self>, CanoError> {
        let run = RunContext::current().ok_or_else(|| {
            CanoError::store(format!(
                "SplitResult::of({state:?}) was called outside a run"
            ))
            .with_hint("call it from a task of the run that executed the split")
        })?;
        Self::in_run(&run, state)
    }

    /// The result of split state `state` in `run`.
    pub fn in_run(run: &RunContext, state: &S) -> Result<Arc<Self>, CanoError> {
        let missing = || {
            CanoError::store(format!("no split result for state {state:?} in this run"))
                .with_hint("read it from a state after the split (the split must have joined), and check that the state was registered with register_split")
        };
        let outputs = run.outputs().ok_or_else(missing)?;
        outputs.get_shared(&key(state)).map_err(|_| missing())
    }
}

impl<S> SplitResult<S> {
    /// The strategy the split joined with.
    pub fn strategy(&self) -> JoinStrategy {
        self.strategy
    }

    /// Whether the split's timeout passed before it joined (only `PartialTimeout`
    /// proceeds in that case).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Every branch, in order.
    pub fn branches(&self) -> &[BranchReport<S>] {
        &self.branches
    }

    /// How many branches the split had.
    pub fn len(&self) -> usize {
        self.branches.len()
    }

    /// Whether the split had no branches (a dynamic fan-out over nothing).
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }

    /// The branches that succeeded: index and what each returned.
    pub fn succeeded(&self) -> impl Iterator<Item = (usize, &TaskResult<S>)> {
        self.branches
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match &b.outcome {
                BranchOutcome::Succeeded(value) => Some((i, value)),
                _ => None,
            })
    }

    /// The branches that failed: index and error.
    pub fn failed(&self) -> impl Iterator<Item = (usize, &CanoError)> {
        self.branches
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match &b.outcome {
                BranchOutcome::Failed(error) => Some((i, error)),
                _ => None,
            })
    }

    /// The indices of the branches cancelled while running.
    pub fn cancelled(&self) -> impl Iterator<Item = usize> {
        self.indices(|o| matches!(o, BranchOutcome::Cancelled))
    }

    /// The indices of the branches that never started (bulkhead).
    pub fn not_started(&self) -> impl Iterator<Item = usize> {
        self.indices(|o| matches!(o, BranchOutcome::NotStarted))
    }

    fn indices(&self, keep: fn(&BranchOutcome<S>) -> bool) -> impl Iterator<Item = usize> {
        self.branches
            .iter()
            .enumerate()
            .filter(move |(_, b)| keep(&b.outcome))
            .map(|(i, _)| i)
    }

    /// How many succeeded and failed, out of how many.
    pub fn tally(&self) -> Tally {
        Tally {
            total: self.len(),
            succeeded: self.succeeded().count(),
            failed: self.failed().count(),
        }
    }

    /// How many branches finished, successfully or not (cano 0.13's count).
    pub fn completed_count(&self) -> usize {
        let tally = self.tally();
        tally.succeeded + tally.failed
    }

    /// How many branches there were (cano 0.13's count).
    pub fn total_count(&self) -> usize {
        self.len()
    }

    /// Every finished branch as cano 0.13's [`SplitTaskResult`], in branch order.
    pub fn task_results(&self) -> Vec<SplitTaskResult<S>>
    where
        S: Clone,
    {
        self.branches
            .iter()
            .enumerate()
            .filter_map(|(task_index, branch)| {
                let result = match &branch.outcome {
                    BranchOutcome::Succeeded(value) => Ok(value.clone()),
                    BranchOutcome::Failed(error) => Err(error.clone()),
                    BranchOutcome::Cancelled | BranchOutcome::NotStarted => return None,
                };
                Some(SplitTaskResult { task_index, result })
            })
            .collect()
    }
}

/// One finished branch of a split, by its index (cano 0.13's shape; see
/// [`SplitResult::task_results`]).
#[derive(Debug, Clone)]
pub struct SplitTaskResult<S> {
    /// The branch's index among the split's tasks.
    pub task_index: usize,
    /// What it returned.
    pub result: Result<TaskResult<S>, CanoError>,
}

/// Where a split state's result is kept in the run's outputs.
pub(crate) fn key<S: Debug>(state: &S) -> String {
    format!("cano.split/{state:?}")
}
