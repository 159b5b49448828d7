//! Batches of runs (`Workflow::spawn_many`) on tokio's paused clock: for any durations
//! and successes, exactly the runs the strategy allows end, the rest are cancelled or
//! never start, and no more than the limit ever run at once; cancelled runs roll back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cano_core::many::{Outcome, WaitStrategy};
use cano_core::{CanoError, Task, TaskConfig, TaskResult, Workflow};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Job {
    /// Work for `ms` milliseconds, then succeed or fail.
    Work {
        index: usize,
        ms: u64,
        ok: bool,
    },
    Done,
}

/// One task per job state (states are registered by value).
struct Sleep {
    ms: u64,
    ok: bool,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Task<Job> for Sleep {
    // One attempt: a failure ends the run when its time is up, as the model says.
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Leaves the count whether the sleep ends or the run is cancelled during it.
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.running);
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        if self.ok {
            Ok(TaskResult::Single(Job::Done))
        } else {
            Err(CanoError::task_execution("failed on purpose"))
        }
    }
}

fn batch(jobs: &[(u64, bool)]) -> (Workflow<Job>, Vec<Job>, Arc<AtomicUsize>) {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut workflow = Workflow::bare().add_exit_state(Job::Done);
    let mut states = Vec::new();
    for (index, &(ms, ok)) in jobs.iter().enumerate() {
        let state = Job::Work { index, ms, ok };
        workflow = workflow.register(
            state.clone(),
            Sleep {
                ms,
                ok,
                running: running.clone(),
                most: most.clone(),
            },
        );
        states.push(state);
    }
    (workflow, states, most)
}

/// What a batch must do, worked out by hand: `limit` slots, each run starting when a
/// slot frees (in order), ending after its duration; done at the quota's last success
/// or at the deadline (an odd millisecond: tokio's timers are to the millisecond, and
/// ends fall on even ones). Returns each run's expected outcome: 'F'inished, fai'L'ed,
/// 'C'ancelled, 'N'ot started.
fn model(
    jobs: &[(u64, bool)],
    limit: usize,
    quota: Option<usize>,
    deadline: Option<u64>,
) -> Vec<char> {
    let n = jobs.len();
    let mut ends: Vec<Option<u64>> = vec![None; n];
    let mut slots: Vec<u64> = vec![0; limit.min(n.max(1))];
    for (i, &(ms, _)) in jobs.iter().enumerate() {
        // The earliest free slot takes the next run.
        let (slot, free_at) = slots
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .map(|(s, t)| (s, *t))
            .unwrap();
        ends[i] = Some(free_at + ms);
        slots[slot] = free_at + ms;
    }
    let starts: Vec<u64> = (0..n).map(|i| ends[i].unwrap() - jobs[i].0).collect();
    // When the batch stops: its deadline, or the quota's last success.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ends[i]);
    let mut stop = deadline;
    let mut successes = 0;
    if let Some(q) = quota {
        for &i in &order {
            if jobs[i].1 {
                successes += 1;
                if successes == q {
                    let at = ends[i].unwrap();
                    stop = Some(stop.map_or(at, |s| s.min(at)));
                    break;
                }
            }
        }
    }
    (0..n)
        .map(|i| {
            let (start, end) = (starts[i], ends[i].unwrap());
            match stop {
                // Started only if a slot freed before the stop (a run due to start at
                // the quota's instant does not).
                Some(s) if start >= s => 'N',
                Some(s) if end > s => 'C',
                _ if jobs[i].1 => 'F',
                _ => 'L',
            }
        })
        .collect()
}

fn outcomes(result: &cano_core::many::ManyResult<Job>) -> Vec<char> {
    result
        .runs
        .iter()
        .map(|r| match r.outcome {
            Outcome::Finished(_) => 'F',
            Outcome::Failed(_) => 'L',
            Outcome::Cancelled => 'C',
            Outcome::NotStarted => 'N',
        })
        .collect()
}

/// Jobs with distinct durations (twice a power of two, in ms: every end falls on an
/// even millisecond, and no two runs end at once), in a shuffled order.
fn jobs() -> impl Strategy<Value = Vec<(u64, bool)>> {
    (1usize..10)
        .prop_flat_map(|n| {
            (
                Just(n),
                Just((0..n as u32).map(|k| 2u64 << k).collect::<Vec<_>>()).prop_shuffle(),
                prop::collection::vec(any::<bool>(), n),
            )
        })
        .prop_map(|(_, durations, oks)| durations.into_iter().zip(oks).collect())
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn each_strategy_ends_exactly_the_runs_it_allows(
        jobs in jobs(),
        limit in 1usize..5,
        pick in 0usize..4,
        quota_seed in 1usize..10,
        deadline in 1u64..600,
    ) {
        let n = jobs.len();
        let quota = 1 + quota_seed % n;
        let (strategy, q, d) = match pick {
            0 => (WaitStrategy::WaitForever, None, None),
            1 => (WaitStrategy::WaitForQuota(quota), Some(quota), None),
            2 => (WaitStrategy::WaitDuration(Duration::from_millis(2 * deadline + 1)), None, Some(2 * deadline + 1)),
            _ => (
                WaitStrategy::WaitQuotaOrDuration { quota, duration: Duration::from_millis(2 * deadline + 1) },
                Some(quota),
                Some(2 * deadline + 1),
            ),
        };
        let (workflow, states, most) = batch(&jobs);
        let result = paused().block_on(async {
            workflow.orchestrate_many(states, limit, strategy).await.unwrap()
        });
        prop_assert_eq!(outcomes(&result), model(&jobs, limit, q, d));
        prop_assert!(most.load(Ordering::SeqCst) <= limit);
        for (i, run) in result.runs.iter().enumerate() {
            prop_assert_eq!(run.index, i);
            prop_assert_eq!(run.run.is_some(), !matches!(run.outcome, Outcome::NotStarted));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn bad_batches_are_clear_errors_and_an_empty_one_is_done_at_once() {
    let (workflow, states, _) = batch(&[(1, true), (2, true)]);
    let error = |limit, strategy| {
        workflow
            .spawn_many(states.clone(), limit, strategy)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(error(0, WaitStrategy::WaitForever).contains("Configuration"));
    assert!(error(1, WaitStrategy::WaitForQuota(3)).contains("batch of 2"));
    assert!(error(1, WaitStrategy::WaitForQuota(0)).contains("quota of 0"));
    assert!(error(1, WaitStrategy::WaitDuration(Duration::ZERO)).contains("zero"));
    let empty = workflow
        .orchestrate_many(Vec::new(), 4, WaitStrategy::WaitDuration(Duration::MAX))
        .await
        .unwrap();
    assert!(empty.runs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn progress_is_visible_while_a_batch_runs_and_cancel_stops_it() {
    let jobs: Vec<(u64, bool)> = (0..6).map(|_| (1000, true)).collect();
    let (workflow, states, most) = batch(&jobs);
    let handle = workflow
        .spawn_many(states, 2, WaitStrategy::WaitForever)
        .unwrap();
    // First two in flight.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let progress = handle.progress();
    assert_eq!(
        (progress.total, progress.started, progress.running),
        (6, 2, 2)
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let progress = handle.progress();
    assert_eq!(progress.finished, 2);
    handle.cancel();
    let result = handle.await;
    let counts = result.counts();
    assert_eq!(
        (counts.finished, counts.cancelled, counts.not_started),
        (2, 2, 2),
        "{result:?}"
    );
    assert!(most.load(Ordering::SeqCst) <= 2);
}
