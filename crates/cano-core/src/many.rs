//! Many runs at once: one workflow over a batch of initial states, at most `limit`
//! in flight, with a [`WaitStrategy`] deciding when the batch is done.
//!
//! ```
//! use std::time::Duration;
//! use cano_core::many::{Outcome, WaitStrategy};
//! use cano_core::{CanoError, Task, TaskResult, Workflow};
//!
//! #[derive(Debug, Clone, PartialEq, Eq, Hash)]
//! enum Report { Build(u32), Done }
//!
//! struct Build;
//! #[async_trait::async_trait]
//! impl Task<Report> for Build {
//!     async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
//!         Ok(TaskResult::Single(Report::Done))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), CanoError> {
//! let mut workflow = Workflow::bare().add_exit_state(Report::Done);
//! for n in 0..10 {
//!     workflow = workflow.register(Report::Build(n), Build);
//! }
//! // Ten reports, three at a time, done once four have succeeded.
//! let batch = workflow
//!     .orchestrate_many((0..10).map(Report::Build), 3, WaitStrategy::WaitForQuota(4))
//!     .await?;
//! // At least four finished (runs ending in the same instant as the fourth keep
//! // their outcome); the others were cancelled or never started.
//! let counts = batch.counts();
//! assert!(counts.finished >= 4);
//! assert_eq!(counts.finished + counts.cancelled + counts.not_started, 10);
//! assert!(batch.runs.iter().all(|r| !matches!(r.outcome, Outcome::Failed(_))));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use crate::error::CanoError;
use crate::resource::ResourceKey;
use crate::run::{CancellationToken, RunId, RunOptions};
use crate::workflow::{Workflow, WorkflowState};

/// When a batch of runs is done (see [`Workflow::spawn_many`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Every run to its end.
    WaitForever,
    /// Until this many runs have finished in an exit state; then the runs still going
    /// are cancelled and the rest never start. Failed runs do not count. If fewer than
    /// the quota can succeed, every run goes to its end. Runs that ended in the same
    /// instant as the one that met the quota (before the batch could cancel them)
    /// keep their outcome: with runs that end at once, a few more than the quota may
    /// finish, never fewer.
    WaitForQuota(usize),
    /// Until this much time has passed since the batch started; then the runs still
    /// going are cancelled and the rest never start. `Duration::MAX` waits for ever.
    WaitDuration(Duration),
    /// Whichever of the two comes first.
    WaitQuotaOrDuration {
        /// The runs to finish in an exit state.
        quota: usize,
        /// The time the batch may take.
        duration: Duration,
    },
}

impl WaitStrategy {
    fn quota(self) -> Option<usize> {
        match self {
            Self::WaitForQuota(quota) | Self::WaitQuotaOrDuration { quota, .. } => Some(quota),
            _ => None,
        }
    }

    fn duration(self) -> Option<Duration> {
        match self {
            Self::WaitDuration(duration) | Self::WaitQuotaOrDuration { duration, .. } => {
                Some(duration).filter(|d| *d != Duration::MAX)
            }
            _ => None,
        }
    }

    /// The mistakes a batch of `runs` with `limit` in flight would make.
    fn check(self, runs: usize, limit: usize) -> Result<(), CanoError> {
        let refuse = |message: String, hint: &'static str| {
            Err(CanoError::configuration(message).with_hint(hint))
        };
        if limit == 0 {
            return refuse(
                "a batch with at most 0 runs in flight would never start one".into(),
                "give spawn_many a limit of at least 1 (usize::MAX: no limit)",
            );
        }
        if let Some(quota) = self.quota() {
            if quota == 0 {
                return refuse(
                    "a quota of 0 finished runs is met before any run starts".into(),
                    "give the quota at least 1, or use WaitStrategy::WaitForever",
                );
            }
            if quota > runs {
                return refuse(
                    format!("a quota of {quota} finished runs cannot be met by a batch of {runs}"),
                    "lower the quota to the batch's size at most",
                );
            }
        }
        if let Self::WaitDuration(Duration::ZERO)
        | Self::WaitQuotaOrDuration {
            duration: Duration::ZERO,
            ..
        } = self
        {
            return refuse(
                "a batch duration of zero cancels every run as it starts".into(),
                "give it a positive duration (Duration::MAX: no limit)",
            );
        }
        Ok(())
    }
}

/// How one run of a batch ended.
#[derive(Debug, Clone)]
pub enum Outcome<S> {
    /// It reached this exit state.
    Finished(S),
    /// It failed with this error.
    Failed(CanoError),
    /// The batch cancelled it (its quota was met, its time was up, or it was
    /// cancelled through its handle); cancelled like any run, its compensations ran.
    Cancelled,
    /// The batch was done before it started.
    NotStarted,
}

/// One run of a batch.
#[derive(Debug, Clone)]
pub struct Instance<S> {
    /// Its place in the batch, from 0.
    pub index: usize,
    /// Its run id, once started.
    pub run: Option<RunId>,
    /// How it ended.
    pub outcome: Outcome<S>,
}

/// Runs of a batch by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Reached an exit state.
    pub finished: usize,
    /// Failed.
    pub failed: usize,
    /// Cancelled by the batch.
    pub cancelled: usize,
    /// Never started.
    pub not_started: usize,
}

/// What a batch did: every run, in the order given.
#[derive(Debug, Clone)]
pub struct ManyResult<S> {
    /// Every run, by its place in the batch.
    pub runs: Vec<Instance<S>>,
}

impl<S> ManyResult<S> {
    /// The runs counted by outcome.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for run in &self.runs {
            match run.outcome {
                Outcome::Finished(_) => counts.finished += 1,
                Outcome::Failed(_) => counts.failed += 1,
                Outcome::Cancelled => counts.cancelled += 1,
                Outcome::NotStarted => counts.not_started += 1,
            }
        }
        counts
    }

    /// The exit states of the runs that finished, by place in the batch.
    pub fn finished(&self) -> impl Iterator<Item = (usize, &S)> {
        self.runs.iter().filter_map(|r| match &r.outcome {
            Outcome::Finished(s) => Some((r.index, s)),
            _ => None,
        })
    }
}

/// Where a batch stands while it runs (see [`ManyHandle::progress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Runs in the batch.
    pub total: usize,
    /// Runs started so far.
    pub started: usize,
    /// Runs going now.
    pub running: usize,
    /// Runs that reached an exit state.
    pub finished: usize,
    /// Runs that failed or were cancelled.
    pub stopped: usize,
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    finished: AtomicUsize,
    stopped: AtomicUsize,
}

/// A batch started with [`Workflow::spawn_many`]: await it for the [`ManyResult`],
/// watch its [`progress`](Self::progress), or [`cancel`](Self::cancel) it.
#[must_use = "dropping the handle detaches the batch; await it to get its result"]
pub struct ManyHandle<S> {
    join: JoinHandle<ManyResult<S>>,
    token: CancellationToken,
    counters: Arc<Counters>,
    total: usize,
}

impl<S> ManyHandle<S> {
    /// Where the batch stands now.
    pub fn progress(&self) -> Progress {
        let started = self.counters.started.load(Ordering::Acquire);
        let finished = self.counters.finished.load(Ordering::Acquire);
        let stopped = self.counters.stopped.load(Ordering::Acquire);
        Progress {
            total: self.total,
            started,
            running: started.saturating_sub(finished + stopped),
            finished,
            stopped,
        }
    }

    /// Cancels the batch: the runs going are cancelled, the rest never start. Awaiting
    /// the handle then gives what each run did.
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

impl<S> Future for ManyHandle<S> {
    type Output = ManyResult<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                // The driver holds no user code: it ends only by returning, or with its
                // runtime (then nothing is left to report).
                Err(e) => std::panic::resume_unwind(match e.try_into_panic() {
                    Ok(panic) => panic,
                    Err(_) => {
                        Box::new("the batch's tokio task was aborted (its runtime shut down)")
                    }
                }),
            })
    }
}

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// Starts one run per state of `initial`, at most `limit` at once (in the order
    /// given), on the tokio runtime; `strategy` says when the batch is done. Each run
    /// is an ordinary run: observers see it, a checkpoint store records it, a
    /// cancelled one is cancelled as any run is (its compensations run).
    ///
    /// Refused with [`CanoError::Configuration`]: a limit of 0, a quota of 0 or above
    /// the batch's size, a zero duration. An empty batch is done at once.
    pub fn spawn_many(
        &self,
        initial: impl IntoIterator<Item = S>,
        limit: usize,
        strategy: WaitStrategy,
    ) -> Result<ManyHandle<S>, CanoError> {
        let initial: Vec<S> = initial.into_iter().collect();
        strategy.check(initial.len(), limit)?;
        let token = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let total = initial.len();
        let join = tokio::spawn(drive(
            self.clone(),
            initial,
            limit,
            strategy,
            token.clone(),
            counters.clone(),
        ));
        Ok(ManyHandle {
            join,
            token,
            counters,
            total,
        })
    }

    /// [`spawn_many`](Self::spawn_many), awaited.
    pub async fn orchestrate_many(
        &self,
        initial: impl IntoIterator<Item = S>,
        limit: usize,
        strategy: WaitStrategy,
    ) -> Result<ManyResult<S>, CanoError> {
        Ok(self.spawn_many(initial, limit, strategy)?.await)
    }
}

/// The batch's driver: starts runs as slots free up, and stops when its strategy says.
async fn drive<S: WorkflowState, K: ResourceKey>(
    workflow: Workflow<S, K>,
    initial: Vec<S>,
    limit: usize,
    strategy: WaitStrategy,
    token: CancellationToken,
    counters: Arc<Counters>,
) -> ManyResult<S> {
    let total = initial.len();
    let mut outcomes: Vec<Option<Instance<S>>> = (0..total).map(|_| None).collect();
    let mut pending = initial.into_iter().enumerate();
    let mut running = JoinSet::new();
    // Each task's place in the batch, to report a run whose task died.
    let mut places: HashMap<tokio::task::Id, (usize, RunId)> = HashMap::new();
    let deadline = strategy
        .duration()
        .and_then(|d| tokio::time::Instant::now().checked_add(d));
    let quota = strategy.quota();
    let mut finished = 0;
    let mut stopping = false;
    loop {
        while !stopping && running.len() < limit {
            let Some((index, state)) = pending.next() else {
                break;
            };
            let run = RunId::new();
            let options = RunOptions::new()
                .with_run_id(run)
                .with_cancellation(token.clone());
            let handle = running.spawn(workflow.clone().spawned(state, options));
            places.insert(handle.id(), (index, run));
            counters.started.fetch_add(1, Ordering::AcqRel);
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(joined) = running.join_next_with_id() => {
                let (id, result) = match joined {
                    Ok((id, result)) => (id, result),
                    Err(e) => (e.id(), Err(match e.try_into_panic() {
                        Ok(panic) => CanoError::from_panic(panic),
                        Err(_) => CanoError::cancelled("the run's tokio task was aborted"),
                    })),
                };
                let Some((index, run)) = places.remove(&id) else { continue };
                let outcome = match result {
                    Ok(state) => {
                        finished += 1;
                        counters.finished.fetch_add(1, Ordering::AcqRel);
                        Outcome::Finished(state)
                    }
                    Err(e) => {
                        counters.stopped.fetch_add(1, Ordering::AcqRel);
                        match e {
                            CanoError::Cancelled(_) if token.is_cancelled() => Outcome::Cancelled,
                            e => Outcome::Failed(e),
                        }
                    }
                };
                outcomes[index] = Some(Instance { index, run: Some(run), outcome });
                if !stopping && quota.is_some_and(|q| finished >= q) {
                    stopping = true;
                    token.cancel();
                }
            }
            () = sleep_until(deadline), if deadline.is_some() && !stopping => {
                stopping = true;
                token.cancel();
            }
            () = token.cancelled(), if !stopping => stopping = true,
        }
    }
    let runs = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, instance)| {
            instance.unwrap_or(Instance {
                index,
                run: None,
                outcome: Outcome::NotStarted,
            })
        })
        .collect();
    ManyResult { runs }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_cannot_work_are_refused_and_say_why() {
        let refused = |strategy: WaitStrategy, runs, limit| {
            strategy.check(runs, limit).unwrap_err().to_string()
        };
        assert!(refused(WaitStrategy::WaitForever, 3, 0).contains("0 runs in flight"));
        assert!(refused(WaitStrategy::WaitForQuota(0), 3, 1).contains("quota of 0"));
        assert!(refused(WaitStrategy::WaitForQuota(4), 3, 1).contains("batch of 3"));
        assert!(refused(WaitStrategy::WaitDuration(Duration::ZERO), 3, 1).contains("zero"));
        let both = WaitStrategy::WaitQuotaOrDuration {
            quota: 1,
            duration: Duration::ZERO,
        };
        assert!(refused(both, 3, 1).contains("zero"));
        assert!(WaitStrategy::WaitForever.check(0, 1).is_ok());
        assert!(
            WaitStrategy::WaitDuration(Duration::MAX)
                .check(3, usize::MAX)
                .is_ok()
        );
        assert_eq!(WaitStrategy::WaitDuration(Duration::MAX).duration(), None);
    }
}
