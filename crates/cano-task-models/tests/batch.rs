//! Batch tasks: results in load order, the concurrency limit, per-item retries and
//! timeouts, failed and panicking items, worker threads, bad configuration.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{CanoError, MemoryStore, Resources, RetryMode, TaskResult, Workflow};
use cano_task_models::batch::ItemCodec;
use cano_task_models::{BatchConfig, BatchTask, ItemResult, run_batch};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Run,
    Done,
}

/// What an item does, by its value.
#[derive(Debug, Clone)]
enum Work {
    /// Succeeds with the value doubled after this many seconds.
    Sleep(u64),
    /// Fails this many times, then succeeds.
    Flaky(usize),
    Fail,
    Panic,
    Hang,
}

#[derive(Clone)]
struct Job {
    items: Arc<Vec<Work>>,
    config: BatchConfig,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    attempts: Arc<Mutex<HashMap<usize, usize>>>,
    fail_load: bool,
}

impl Job {
    fn new(items: Vec<Work>, config: BatchConfig) -> Self {
        Self {
            items: Arc::new(items),
            config,
            in_flight: Arc::default(),
            peak: Arc::default(),
            attempts: Arc::default(),
            fail_load: false,
        }
    }
}

impl BatchTask<S> for Job {
    type Item = (usize, Work);
    type ItemOutput = u64;
    // Written by hand (not with `#[task::batch]`), so the progress codec and the
    // worker-thread copy are spelled out.
    fn item_codec(&self) -> Option<ItemCodec<Self::ItemOutput>> {
        Some(ItemCodec::serde())
    }
    fn worker_copy(&self) -> Option<Self> {
        Some(self.clone())
    }

    async fn load(&self, _res: &Resources) -> Result<Vec<(usize, Work)>, CanoError> {
        if self.fail_load {
            return Err(CanoError::resource("the orders table is locked"));
        }
        Ok(self.items.iter().cloned().enumerate().collect())
    }

    async fn process_item(&self, _res: &Resources, item: &(usize, Work)) -> Result<u64, CanoError> {
        let (index, work) = item;
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(*index).or_default();
            *n += 1;
            *n
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let _leave = Leave(&self.in_flight);
        match work {
            Work::Sleep(secs) => tokio::time::sleep(Duration::from_secs(*secs)).await,
            Work::Flaky(failures) if attempt <= *failures => {
                return Err(CanoError::task_execution(format!("item {index} flaked")));
            }
            Work::Flaky(_) => {}
            Work::Fail => return Err(CanoError::task_execution(format!("item {index} is bad"))),
            Work::Panic => panic!("item {index} hit a bug"),
            Work::Hang => std::future::pending::<()>().await,
        }
        Ok(*index as u64 * 2)
    }

    async fn finish(
        &self,
        res: &Resources,
        results: Vec<ItemResult<u64>>,
    ) -> Result<TaskResult<S>, CanoError> {
        let seen: Vec<Result<u64, String>> = results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        res.get::<MemoryStore, _>("out")?.put("results", seen)?;
        Ok(TaskResult::Single(S::Done))
    }

    fn batch_config(&self) -> BatchConfig {
        self.config
    }
}
as_task!(Job, BatchTask, run_batch, S);

struct Leave<'a>(&'a AtomicUsize);
impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run(job: Job) -> Result<Vec<Result<u64, String>>, CanoError> {
    let out = MemoryStore::new();
    let workflow = Workflow::new(Resources::new().insert("out", out.clone()))
        .register(S::Run, job)
        .add_exit_state(S::Done);
    workflow.orchestrate(S::Run).await?;
    Ok(out.get("results")?)
}

#[tokio::test(start_paused = true)]
async fn results_come_back_in_load_order_within_the_concurrency_limit() {
    // Later items finish first.
    let items = (0..8).map(|i| Work::Sleep(8 - i)).collect();
    let job = Job::new(items, BatchConfig::new().with_concurrency(3));
    let peak = job.peak.clone();
    let started = tokio::time::Instant::now();
    let results = run(job).await.unwrap();
    assert_eq!(results, (0..8).map(|i| Ok(i * 2)).collect::<Vec<_>>());
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    // 3 lanes over sleeps of 8..1 s: the lanes end at 13 s, 12 s and 11 s.
    assert_eq!(started.elapsed(), Duration::from_secs(13));
}

#[tokio::test(start_paused = true)]
async fn failed_and_panicking_items_are_results_not_crashes() {
    let job = Job::new(
        vec![Work::Sleep(0), Work::Fail, Work::Panic, Work::Sleep(1)],
        BatchConfig::new(),
    );
    let results = run(job).await.unwrap();
    assert_eq!(results[0], Ok(0));
    assert!(results[1].as_ref().unwrap_err().contains("item 1 is bad"));
    assert!(
        results[2]
            .as_ref()
            .unwrap_err()
            .contains("item 2 hit a bug")
    );
    assert_eq!(results[3], Ok(6));
}

#[tokio::test(start_paused = true)]
async fn each_item_is_retried_on_its_own() {
    let retry = RetryMode::fixed(2, Duration::from_secs(1));
    let job = Job::new(
        vec![Work::Flaky(2), Work::Flaky(3), Work::Sleep(0)],
        BatchConfig::new().with_item_retry(retry),
    );
    let attempts = job.attempts.clone();
    let results = run(job).await.unwrap();
    assert_eq!(results[0], Ok(0));
    let exhausted = results[1].as_ref().unwrap_err();
    assert!(
        exhausted.contains("item 1: all 3 attempts failed") && exhausted.contains("flaked"),
        "{exhausted}"
    );
    assert_eq!(results[2], Ok(4));
    let attempts = attempts.lock().unwrap();
    assert_eq!((attempts[&0], attempts[&1], attempts[&2]), (3, 3, 1));
}

#[tokio::test(start_paused = true)]
async fn an_item_past_its_timeout_fails_and_the_batch_goes_on() {
    let job = Job::new(
        vec![Work::Hang, Work::Sleep(1)],
        BatchConfig::new().with_item_timeout(Duration::from_secs(5)),
    );
    let started = tokio::time::Instant::now();
    let results = run(job).await.unwrap();
    assert!(
        results[0].as_ref().unwrap_err().contains("within 5s"),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1], Ok(2));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn an_empty_batch_finishes_with_no_results() {
    assert_eq!(run(Job::new(vec![], BatchConfig::new())).await.unwrap(), []);
}

#[tokio::test]
async fn a_load_that_fails_names_the_task_and_the_state() {
    let mut job = Job::new(vec![Work::Sleep(0)], BatchConfig::new());
    job.fail_load = true;
    let err = run(job).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`Job` could not load its items") && text.contains("locked"),
        "{text}"
    );
    assert!(text.contains("Run"), "{text}");
}

#[tokio::test]
async fn a_concurrency_of_zero_is_refused() {
    let job = Job::new(vec![Work::Sleep(0)], BatchConfig::new().with_concurrency(0));
    let err = run(job).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(err.to_string().contains("concurrency of 0"), "{err}");
}

/// Records which tokio task each item ran on.
#[derive(Clone)]
struct WhereDidItRun {
    tasks: Arc<Mutex<Vec<Option<tokio::task::Id>>>>,
    config: BatchConfig,
}

impl BatchTask<S> for WhereDidItRun {
    type Item = u32;
    type ItemOutput = u32;
    // Written by hand (not with `#[task::batch]`), so the progress codec and the
    // worker-thread copy are spelled out.
    fn item_codec(&self) -> Option<ItemCodec<Self::ItemOutput>> {
        Some(ItemCodec::serde())
    }
    fn worker_copy(&self) -> Option<Self> {
        Some(self.clone())
    }

    async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
        Ok((0..6).collect())
    }
    async fn process_item(&self, res: &Resources, item: &u32) -> Result<u32, CanoError> {
        // Spawned items still see the workflow's resources (when it has any).
        if !res.is_empty() {
            res.get::<MemoryStore, _>("out")?;
        }
        self.tasks.lock().unwrap().push(tokio::task::try_id());
        Ok(item + 1)
    }
    async fn finish(
        &self,
        _res: &Resources,
        results: Vec<ItemResult<u32>>,
    ) -> Result<TaskResult<S>, CanoError> {
        let values: Vec<u32> = results.into_iter().collect::<Result<_, _>>()?;
        assert_eq!(values, [1, 2, 3, 4, 5, 6]);
        self.tasks.lock().unwrap().push(tokio::task::try_id());
        Ok(TaskResult::Single(S::Done))
    }
    fn batch_config(&self) -> BatchConfig {
        self.config
    }
}
as_task!(WhereDidItRun, BatchTask, run_batch, S);

async fn task_ids(config: BatchConfig) -> (Vec<tokio::task::Id>, tokio::task::Id) {
    task_ids_with(config, Resources::new().insert("out", MemoryStore::new())).await
}

async fn task_ids_with(
    config: BatchConfig,
    resources: Resources,
) -> (Vec<tokio::task::Id>, tokio::task::Id) {
    let job = WhereDidItRun {
        tasks: Arc::default(),
        config,
    };
    let tasks = job.tasks.clone();
    let workflow = Workflow::new(resources)
        .register(S::Run, job)
        .add_exit_state(S::Done);
    workflow.spawn(S::Run).await.unwrap();
    let mut ids: Vec<_> = tasks.lock().unwrap().iter().map(|id| id.unwrap()).collect();
    let state = ids.pop().unwrap();
    (ids, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_worker_threads_each_item_is_its_own_tokio_task() {
    let (items, state) = task_ids(BatchConfig::new().on_worker_threads()).await;
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|id| *id != state));
    let distinct: std::collections::HashSet<_> = items.iter().collect();
    assert_eq!(distinct.len(), 6);
    // By default they take turns on the state's own task.
    let (items, state) = task_ids(BatchConfig::new()).await;
    assert!(items.iter().all(|id| *id == state));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_without_resources_still_spreads_items_over_worker_threads() {
    let (items, state) =
        task_ids_with(BatchConfig::new().on_worker_threads(), Resources::empty()).await;
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|id| *id != state));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the mix of outcomes and the concurrency, `finish` sees one result per
    /// item, in load order, each the item's own, and no more items run at once than
    /// allowed.
    #[test]
    fn every_item_gets_its_own_result_in_order(
        plan in proptest::collection::vec(0u8..4, 0..40),
        concurrency in 1usize..8,
    ) {
        let items: Vec<Work> = plan
            .iter()
            .map(|k| match k {
                0 => Work::Sleep(0),
                1 => Work::Sleep(3),
                2 => Work::Fail,
                _ => Work::Panic,
            })
            .collect();
        let job = Job::new(items, BatchConfig::new().with_concurrency(concurrency));
        let peak = job.peak.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let results = rt.block_on(run(job)).unwrap();
        prop_assert_eq!(results.len(), plan.len());
        for (index, (kind, result)) in plan.iter().zip(&results).enumerate() {
            let expected = match kind {
                0 | 1 => None,
                2 => Some(format!("item {index} is bad")),
                _ => Some(format!("item {index} hit a bug")),
            };
            match expected {
                None => prop_assert_eq!(result, &Ok(index as u64 * 2)),
                Some(text) => prop_assert!(result.as_ref().unwrap_err().contains(&text)),
            }
        }
        prop_assert!(peak.load(Ordering::SeqCst) <= concurrency);
    }
}
