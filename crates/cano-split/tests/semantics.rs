//! Each join strategy's documented behaviour, on tokio's paused clock: when it proceeds,
//! when it fails, which branches it cancels, and what the next state reads.

mod common;

use std::time::Duration;

use cano_core::{CanoError, RunOptions, TaskConfig, TaskResult};
use cano_split::{BranchOutcome, JoinConfig, JoinStrategy};
use common::*;
use tokio::time::Instant;

use Outcome::*;

fn join(strategy: JoinStrategy) -> JoinConfig<S> {
    JoinConfig::new(strategy, S::Join)
}

#[tokio::test(start_paused = true)]
async fn all_proceeds_when_every_branch_succeeded() {
    let (probe, mut ended) = Probe::new();
    let branches = (0..3)
        .map(|i| Branch::new(i, 10 * (i as u64 + 1), Succeed, &probe))
        .collect();
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::All));
    let start = Instant::now();
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    let result = taken(&seen);
    assert_eq!(ids(result.succeeded()), [0, 1, 2]);
    assert!(matches!(
        result.branches()[1].outcome,
        BranchOutcome::Succeeded(TaskResult::Single(S::Join))
    ));
    assert_eq!(result.branches()[0].task, "Branch");
    assert!(cancelled_of(&mut ended, 3).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn all_fails_on_the_first_failure_and_cancels_the_rest() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Succeed, &probe),
        Branch::new(1, 20, Fail, &probe),
        Branch::new(2, 1_000, Succeed, &probe),
        Branch::new(3, 2_000, Succeed, &probe),
    ];
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::All));
    let start = Instant::now();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    // A Workflow error, as in cano 0.13, naming the split state and the counts; the
    // failing branch's own error (naming its task) is its source.
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    assert!(err.message().contains("join condition not met"), "{err}");
    assert!(err.message().contains("branch 1 failed"), "{err}");
    assert_eq!(err.state(), Some("Fan"));
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("task `Branch`"), "{source}");
    assert!(seen.lock().unwrap().is_none(), "the join state did not run");
    assert_eq!(cancelled_of(&mut ended, 4).await, [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn any_proceeds_on_the_first_success_and_cancels_the_rest() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Fail, &probe),
        Branch::new(1, 30, Succeed, &probe),
        Branch::new(2, 50, Succeed, &probe),
    ];
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::Any));
    let start = Instant::now();
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    let result = taken(&seen);
    assert_eq!(ids(result.succeeded()), [1]);
    assert_eq!(ids(result.failed()), [0]);
    assert_eq!(result.cancelled().collect::<Vec<_>>(), [2]);
    assert_eq!(cancelled_of(&mut ended, 3).await, [2]);
}

#[tokio::test(start_paused = true)]
async fn any_fails_only_when_every_branch_failed() {
    let (probe, _ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Fail, &probe),
        Branch::new(1, 20, Panic, &probe),
        Branch::new(2, 30, Fail, &probe),
    ];
    let (wf, _) = split_workflow(branches, join(JoinStrategy::Any));
    let start = Instant::now();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("0 succeeded, 3 failed"), "{text}");
    assert_eq!(err.state(), Some("Fan"));
    // The first failure is kept as the source.
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("branch 0 failed"), "{source}");
}

#[tokio::test(start_paused = true)]
async fn quorum_proceeds_at_n_successes_without_waiting_for_stragglers() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 40, Succeed, &probe),
        Branch::new(1, 10, Succeed, &probe),
        Branch::new(2, 20, Fail, &probe),
        Branch::new(3, 5_000, Succeed, &probe),
    ];
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::Quorum(2)));
    let start = Instant::now();
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    let result = taken(&seen);
    assert_eq!(ids(result.succeeded()), [0, 1]);
    assert_eq!(ids(result.failed()), [2]);
    assert_eq!(result.cancelled().collect::<Vec<_>>(), [3]);
    assert_eq!(cancelled_of(&mut ended, 4).await, [3]);
}

#[tokio::test(start_paused = true)]
async fn quorum_fails_as_soon_as_it_became_impossible() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Fail, &probe),
        Branch::new(1, 20, Fail, &probe),
        Branch::new(2, 1_000, Succeed, &probe),
        Branch::new(3, 1_000, Succeed, &probe),
    ];
    let (wf, _) = split_workflow(branches, join(JoinStrategy::Quorum(3)));
    let start = Instant::now();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    // After the second failure only two successes remain possible.
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert!(
        err.to_string()
            .contains("can no longer reach Quorum(3) (3 successes needed): 0 succeeded, 2 failed, 2 still running of 4 branches"),
        "{err}"
    );
    assert_eq!(cancelled_of(&mut ended, 4).await, [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn percentage_needs_the_rounded_up_share() {
    let (probe, _ended) = Probe::new();
    // 0.5 of 5 branches is 2.5, so three successes are needed.
    let branches = (0..5)
        .map(|i| Branch::new(i, 10 * (i as u64 + 1), Succeed, &probe))
        .collect();
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::Percentage(0.5)));
    let start = Instant::now();
    wf.orchestrate(S::Fan).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert_eq!(ids(taken(&seen).succeeded()), [0, 1, 2]);

    let (probe, _ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Fail, &probe),
        Branch::new(1, 20, Fail, &probe),
        Branch::new(2, 30, Succeed, &probe),
        Branch::new(3, 40, Succeed, &probe),
    ];
    let (wf, _) = split_workflow(branches, join(JoinStrategy::Percentage(0.75)));
    let start = Instant::now();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert!(err.to_string().contains("3 successes needed"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn partial_results_waits_for_its_successes_and_shows_the_failures_too() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Fail, &probe),
        Branch::new(1, 20, Succeed, &probe),
        Branch::new(2, 30, Panic, &probe),
        Branch::new(3, 40, Succeed, &probe),
        Branch::new(4, 1_000, Succeed, &probe),
    ];
    // Two successes are enough (cano 0.13's reading): the split proceeds at the
    // second, 40 ms in, with the failures before it on record.
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::PartialResults(2)));
    let start = Instant::now();
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    let result = taken(&seen);
    assert_eq!(ids(result.succeeded()), [1, 3]);
    let failed: Vec<(usize, String)> = result
        .failed()
        .map(|(i, e)| (i, e.message().to_owned()))
        .collect();
    assert_eq!(failed[0], (0, "branch 0 failed".to_owned()));
    assert_eq!(failed[1].0, 2);
    assert!(
        failed[1].1.starts_with("panic: branch 2 panicked"),
        "{failed:?}"
    );
    assert_eq!(result.cancelled().collect::<Vec<_>>(), [4]);
    assert_eq!(cancelled_of(&mut ended, 5).await, [4]);

    // Once its successes became impossible it fails, as a Workflow error.
    let (probe, _ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Fail, &probe),
        Branch::new(1, 20, Succeed, &probe),
        Branch::new(2, 30, Fail, &probe),
    ];
    let (wf, _) = split_workflow(branches, join(JoinStrategy::PartialResults(2)));
    let start = Instant::now();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    assert!(err.to_string().contains("1 succeeded, 2 failed"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn partial_timeout_proceeds_at_the_timeout_with_what_finished() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Succeed, &probe),
        Branch::new(1, 20, Fail, &probe),
        Branch::new(2, 500, Succeed, &probe),
    ];
    let config = join(JoinStrategy::PartialTimeout).with_timeout(Duration::from_millis(100));
    let (wf, seen) = split_workflow(branches, config);
    let start = Instant::now();
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let result = taken(&seen);
    assert!(result.timed_out());
    assert_eq!(ids(result.succeeded()), [0]);
    assert_eq!(ids(result.failed()), [1]);
    assert_eq!(result.cancelled().collect::<Vec<_>>(), [2]);
    assert_eq!(cancelled_of(&mut ended, 3).await, [2]);

    // When everything finished earlier there is nothing left to wait for.
    let (probe, _ended) = Probe::new();
    let branches = vec![Branch::new(0, 10, Succeed, &probe)];
    let config = join(JoinStrategy::PartialTimeout).with_timeout(Duration::from_secs(60));
    let (wf, seen) = split_workflow(branches, config);
    let start = Instant::now();
    wf.orchestrate(S::Fan).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert!(!taken(&seen).timed_out());
}

#[tokio::test(start_paused = true)]
async fn a_timeout_under_another_strategy_names_the_state_and_the_counts() {
    let (probe, mut ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Succeed, &probe),
        Branch::new(1, 20, Fail, &probe),
        Branch::new(2, 500, Succeed, &probe),
        Branch::new(3, 600, Succeed, &probe),
    ];
    let config = join(JoinStrategy::Quorum(2)).with_timeout(Duration::from_millis(100));
    let (wf, _) = split_workflow(branches, config);
    let start = Instant::now();
    let err = wf.orchestrate(S::Fan).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // A Workflow error, as in cano 0.13.
    assert!(matches!(err, CanoError::Workflow(_)), "{err:?}");
    assert!(err.to_string().contains("timeout exceeded"), "{err}");
    assert_eq!(err.state(), Some("Fan"));
    assert!(
        err.to_string().contains(
            "within 100ms under Quorum(2): 1 succeeded, 1 failed, 2 still running of 4 branches"
        ),
        "{err}"
    );
    assert_eq!(cancelled_of(&mut ended, 4).await, [2, 3]);

    // A strategy satisfied before the timeout proceeds as usual.
    let (probe, _ended) = Probe::new();
    let branches = vec![
        Branch::new(0, 10, Succeed, &probe),
        Branch::new(1, 20, Succeed, &probe),
    ];
    let config = join(JoinStrategy::All).with_timeout(Duration::from_millis(100));
    let (wf, _) = split_workflow(branches, config);
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_run_cancels_every_branch() {
    let (probe, mut ended) = Probe::new();
    let branches = (0..4)
        .map(|i| Branch::new(i, 3_600_000, Succeed, &probe))
        .collect();
    let (wf, _) = split_workflow(branches, join(JoinStrategy::All));
    let handle = wf.spawn(S::Fan);
    // Wait until every branch is running, then cancel.
    probe.started.acquire_many(4).await.unwrap().forget();
    handle.cancel();
    let err = handle.await.unwrap_err();
    assert!(matches!(err, CanoError::Cancelled(_)), "{err:?}");
    assert_eq!(cancelled_of(&mut ended, 4).await, [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn the_workflow_timeout_cancels_every_branch() {
    let (probe, mut ended) = Probe::new();
    let branches = (0..3)
        .map(|i| Branch::new(i, 3_600_000, Succeed, &probe))
        .collect();
    let (wf, _) = split_workflow(branches, join(JoinStrategy::All));
    let wf = wf.with_timeout(Duration::from_millis(50));
    let err = wf
        .orchestrate_with(S::Fan, RunOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(cancelled_of(&mut ended, 3).await, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn each_branch_applies_its_own_retries_and_attempt_timeout() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails its first two attempts.
    struct Flaky(Arc<AtomicUsize>);
    #[async_trait::async_trait]
    impl cano_core::Task<S> for Flaky {
        async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(CanoError::task_execution("not yet"))
            } else {
                Ok(TaskResult::Single(S::Join))
            }
        }
        fn config(&self) -> TaskConfig {
            TaskConfig::minimal().with_fixed_retry(2, Duration::from_millis(5))
        }
    }

    let calls = Arc::new(AtomicUsize::new(0));
    let (probe, _ended) = Probe::new();
    let mut slow = Branch::new(1, 1_000, Succeed, &probe);
    slow.config = TaskConfig::minimal().with_attempt_timeout(Duration::from_millis(50));
    let seen: Seen = Arc::default();
    let branches = cano_split::Branches::new()
        .with(Flaky(calls.clone()))
        .with(slow);
    let wf = cano_core::Workflow::bare()
        .register_split(
            S::Fan,
            branches,
            join(JoinStrategy::PartialTimeout).with_timeout(Duration::from_secs(10)),
        )
        .register(S::Join, Collect(seen.clone()))
        .add_exit_state(S::Done);
    use cano_split::SplitExt;
    wf.orchestrate(S::Fan).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two retries, then success");
    let result = taken(&seen);
    assert_eq!(ids(result.succeeded()), [0]);
    let (index, error) = result.failed().next().unwrap();
    assert_eq!(index, 1);
    assert!(matches!(error, CanoError::Timeout(_)), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_bounds_running_and_spawned_branches() {
    let (probe, _ended) = Probe::new();
    let branches = (0..10)
        .map(|i| Branch::new(i, 10, Succeed, &probe))
        .collect();
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::All).with_bulkhead(3));
    assert_eq!(wf.orchestrate(S::Fan).await.unwrap(), S::Done);
    assert_eq!(
        probe.max_running.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    // The run itself is not a spawned task here, so every alive task is a branch: the
    // rest were not spawned ahead of time.
    assert_eq!(probe.max_alive.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(taken(&seen).succeeded().count(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_leaves_unstarted_branches_unstarted_when_the_join_decides() {
    let (probe, _ended) = Probe::new();
    let branches = (0..6)
        .map(|i| Branch::new(i, 10 * (i as u64 + 1), Succeed, &probe))
        .collect();
    let (wf, seen) = split_workflow(branches, join(JoinStrategy::Any).with_bulkhead(2));
    wf.orchestrate(S::Fan).await.unwrap();
    let result = taken(&seen);
    assert_eq!(ids(result.succeeded()), [0]);
    assert_eq!(result.cancelled().collect::<Vec<_>>(), [1]);
    assert_eq!(result.not_started().collect::<Vec<_>>(), [2, 3, 4, 5]);
    assert_eq!(probe.attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
}
