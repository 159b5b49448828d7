//! Task models in checkpointed workflows: after a crash (the run's tokio task aborted
//! mid-state, the store reopened) a batch does not redo finished items, a timer waits
//! only for what remains, a stream reopens after its last flushed window. Each runs on
//! the in-memory store and on a real sled database.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::CheckpointStore;
use cano_core::{
    CancellationToken, CanoError, MemoryStore, Resources, RunId, RunOptions, TaskResult, Workflow,
};
use cano_task_models::batch::ItemCodec;
use cano_task_models::{
    BatchConfig, BatchTask, Deadline, ItemResult, ItemStream, StreamConfig, StreamSummary,
    StreamTask, TimerTask, WindowOutcome, run_batch, run_stream, run_timer,
};
use cano_testing::FaultyStore;
use common::Backend;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum S {
    Work,
    Done,
}

fn workflow<T: cano_core::Task<S> + 'static>(task: T, store: Arc<FaultyStore>) -> Workflow<S> {
    Workflow::new(Resources::new().insert("out", MemoryStore::new()))
        .register(S::Work, task)
        .add_exit_state(S::Done)
        .with_shared_checkpoint_store(store)
        .with_workflow_id("task-models")
}

/// Starts a run on its own tokio task, waits for `ready`, then aborts it: the process
/// "dies" with nothing more written.
async fn crash_when<F: std::future::Future<Output = ()>>(
    workflow: &Workflow<S>,
    run: RunId,
    ready: F,
) {
    let running = {
        let workflow = workflow.clone();
        tokio::spawn(async move {
            workflow
                .orchestrate_with(S::Work, RunOptions::new().with_run_id(run))
                .await
        })
    };
    ready.await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
}

// ---------------------------------------------------------------- batch

#[derive(Clone)]
struct Import {
    /// Items from this index on never finish while `stuck` is set.
    stuck_from: usize,
    stuck: Arc<AtomicBool>,
    done: Arc<Mutex<HashMap<u32, u32>>>,
}

impl BatchTask<S> for Import {
    type Item = u32;
    type ItemOutput = String;
    // Written by hand (not with `#[task::batch]`), so the progress codec and the
    // worker-thread copy are spelled out.
    fn item_codec(&self) -> Option<ItemCodec<Self::ItemOutput>> {
        Some(ItemCodec::serde())
    }
    fn worker_copy(&self) -> Option<Self> {
        Some(self.clone())
    }

    async fn load(&self, _res: &Resources) -> Result<Vec<u32>, CanoError> {
        Ok((0..10).collect())
    }
    async fn process_item(&self, _res: &Resources, item: &u32) -> Result<String, CanoError> {
        if self.stuck.load(Ordering::SeqCst) && *item as usize >= self.stuck_from {
            std::future::pending::<()>().await;
        }
        *self.done.lock().unwrap().entry(*item).or_default() += 1;
        Ok(format!("row-{item}"))
    }
    async fn finish(
        &self,
        res: &Resources,
        results: Vec<ItemResult<String>>,
    ) -> Result<TaskResult<S>, CanoError> {
        let rows: Vec<String> = results.into_iter().collect::<Result<_, _>>()?;
        res.get::<MemoryStore, _>("out")?.put("rows", rows)?;
        Ok(TaskResult::Single(S::Done))
    }
    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new().with_concurrency(2)
    }
}
as_task!(Import, BatchTask, run_batch, S);

/// How many distinct items the rows so far have saved.
fn saved_items(rows: &[cano_core::CheckpointRow]) -> usize {
    let keys: std::collections::HashSet<&str> = rows
        .iter()
        .flat_map(|r| r.data.entries.iter())
        .filter(|(k, v)| k.contains("item/") && v.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    keys.len()
}

async fn batch_resumes_without_redoing_items(backend: Backend) {
    let import = Import {
        stuck_from: 6,
        stuck: Arc::new(AtomicBool::new(true)),
        done: Arc::default(),
    };
    let run = RunId::new();
    let store = FaultyStore::wrapping(backend.open());
    let first = workflow(import.clone(), store.clone());
    crash_when(&first, run, store.wait_for(|rows| saved_items(rows) == 6)).await;
    drop((first, store));
    assert_eq!(import.done.lock().unwrap().len(), 6);

    import.stuck.store(false, Ordering::SeqCst);
    let store = FaultyStore::wrapping(backend.open());
    let resumed = workflow(import.clone(), store.clone());
    assert_eq!(resumed.resume_from(run).await.unwrap(), S::Done);
    // Every item was processed exactly once over both runs, and `finish` saw all ten.
    let done = import.done.lock().unwrap().clone();
    assert_eq!(done, (0..10).map(|i| (i, 1)).collect::<HashMap<_, _>>());
    let rows: Vec<String> = resumed
        .resources()
        .get::<MemoryStore, _>("out")
        .unwrap()
        .get("rows")
        .unwrap();
    assert_eq!(
        rows,
        (0..10).map(|i| format!("row-{i}")).collect::<Vec<_>>()
    );
    assert!(
        store.load(run).await.unwrap().is_empty(),
        "a finished run's log is cleared"
    );
}

#[tokio::test]
async fn batch_resumes_without_redoing_items_in_memory() {
    batch_resumes_without_redoing_items(Backend::memory()).await;
}

#[tokio::test]
async fn batch_resumes_without_redoing_items_on_sled() {
    batch_resumes_without_redoing_items(Backend::sled()).await;
}

#[derive(Clone)]
struct Resized(Arc<AtomicU32>);

impl BatchTask<S> for Resized {
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
        // The second run loads a different number of items.
        let n = if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            4
        } else {
            3
        };
        Ok((0..n).collect())
    }
    async fn process_item(&self, _res: &Resources, item: &u32) -> Result<u32, CanoError> {
        if *item == 3 {
            std::future::pending::<()>().await;
        }
        Ok(item + 100)
    }
    async fn finish(
        &self,
        res: &Resources,
        results: Vec<ItemResult<u32>>,
    ) -> Result<TaskResult<S>, CanoError> {
        let values: Vec<u32> = results.into_iter().collect::<Result<_, _>>()?;
        res.get::<MemoryStore, _>("out")?.put("values", values)?;
        Ok(TaskResult::Single(S::Done))
    }
    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new().with_concurrency(1)
    }
}
as_task!(Resized, BatchTask, run_batch, S);

#[tokio::test]
async fn a_batch_whose_items_changed_starts_over() {
    let backend = Backend::memory();
    let run = RunId::new();
    let loads = Arc::new(AtomicU32::new(0));
    let store = FaultyStore::wrapping(backend.open());
    let first = workflow(Resized(loads.clone()), store.clone());
    crash_when(&first, run, store.wait_for(|rows| saved_items(rows) == 3)).await;
    let resumed = workflow(Resized(loads), FaultyStore::wrapping(backend.open()));
    resumed.resume_from(run).await.unwrap();
    let values: Vec<u32> = resumed
        .resources()
        .get::<MemoryStore, _>("out")
        .unwrap()
        .get("values")
        .unwrap();
    assert_eq!(values, [100, 101, 102]);
}

// ---------------------------------------------------------------- timer

struct Reminder {
    asked: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl TimerTask<S> for Reminder {
    async fn deadline(&self, _res: &Resources) -> Result<Deadline, CanoError> {
        // A second answer would be wrong: a resumed run must use the saved moment.
        let secs = if self.asked.fetch_add(1, Ordering::SeqCst) == 0 {
            100
        } else {
            1_000
        };
        Ok(Deadline::After(Duration::from_secs(secs)))
    }
    async fn fire(&self, _res: &Resources) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Done))
    }
}
as_task!(Reminder, TimerTask, run_timer, S);

async fn timer_waits_only_for_what_remains(backend: Backend) {
    let asked = Arc::new(AtomicU32::new(0));
    let run = RunId::new();
    let store = FaultyStore::wrapping(backend.open());
    let first = workflow(
        Reminder {
            asked: asked.clone(),
        },
        store.clone(),
    );
    crash_when(&first, run, store.wait_for_steps(1)).await;
    drop((first, store));

    let resumed = workflow(
        Reminder {
            asked: asked.clone(),
        },
        FaultyStore::wrapping(backend.open()),
    );
    let started = Instant::now();
    assert_eq!(resumed.resume_from(run).await.unwrap(), S::Done);
    let waited = started.elapsed();
    // The saved moment is 100 s after the first entry by the wall clock, which moved
    // on only by the test's own run time since.
    assert!(
        waited <= Duration::from_secs(100) && waited > Duration::from_secs(95),
        "{waited:?}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn timer_waits_only_for_what_remains_in_memory() {
    timer_waits_only_for_what_remains(Backend::memory()).await;
}

#[tokio::test(start_paused = true)]
async fn timer_waits_only_for_what_remains_on_sled() {
    timer_waits_only_for_what_remains(Backend::sled()).await;
}

// ---------------------------------------------------------------- stream

/// Offsets 0..10 of a log; the first run's source stalls after `stall_after` items.
#[derive(Clone)]
struct Tail {
    stall_after: Arc<Mutex<Option<u32>>>,
    opened: Arc<Mutex<Vec<Option<u32>>>>,
    flushed: Arc<Mutex<Vec<Vec<u32>>>>,
    pulled: Arc<tokio::sync::watch::Sender<u32>>,
}

impl Tail {
    fn new(stall_after: u32) -> Self {
        Self {
            stall_after: Arc::new(Mutex::new(Some(stall_after))),
            opened: Arc::default(),
            flushed: Arc::default(),
            pulled: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

#[async_trait::async_trait]
impl StreamTask<S> for Tail {
    type Item = u32;
    type Cursor = u32;

    async fn open(
        &self,
        _res: &Resources,
        cursor: Option<u32>,
    ) -> Result<ItemStream<u32>, CanoError> {
        self.opened.lock().unwrap().push(cursor);
        let from = cursor.map_or(0, |c| c + 1);
        let stall = *self.stall_after.lock().unwrap();
        let pulled = self.pulled.clone();
        let items = futures::stream::iter(from..10).then(move |offset| {
            let pulled = pulled.clone();
            async move {
                if stall.is_some_and(|s| offset >= s) {
                    std::future::pending::<()>().await;
                }
                pulled.send_modify(|n| *n += 1);
                Ok(offset)
            }
        });
        Ok(Box::pin(futures::StreamExt::boxed(items)))
    }
    async fn flush(
        &self,
        _res: &Resources,
        window: Vec<u32>,
    ) -> Result<WindowOutcome<u32, S>, CanoError> {
        let last = *window.last().unwrap();
        self.flushed.lock().unwrap().push(window);
        Ok(WindowOutcome::Continue(last))
    }
    async fn finish(
        &self,
        _res: &Resources,
        summary: StreamSummary<u32>,
    ) -> Result<TaskResult<S>, CanoError> {
        assert_eq!(summary.cursor, Some(9));
        Ok(TaskResult::Single(S::Done))
    }
    fn stream_config(&self) -> StreamConfig {
        StreamConfig::new().with_max_items(3)
    }
}
as_task!(Tail, StreamTask, run_stream, S);

use futures::StreamExt as _;

async fn stream_reopens_after_the_last_flushed_window(backend: Backend) {
    let tail = Tail::new(7);
    let run = RunId::new();
    let store = FaultyStore::wrapping(backend.open());
    let first = workflow(tail.clone(), store.clone());
    // Windows [0, 1, 2] and [3, 4, 5] are saved; item 6 is in hand when it dies.
    crash_when(&first, run, store.wait_for_steps(2)).await;
    drop((first, store));

    *tail.stall_after.lock().unwrap() = None;
    let resumed = workflow(tail.clone(), FaultyStore::wrapping(backend.open()));
    assert_eq!(resumed.resume_from(run).await.unwrap(), S::Done);
    assert_eq!(*tail.opened.lock().unwrap(), [None, Some(5)]);
    let flushed = tail.flushed.lock().unwrap().clone();
    assert_eq!(
        flushed,
        [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
    );
}

#[tokio::test]
async fn stream_reopens_after_the_last_flushed_window_in_memory() {
    stream_reopens_after_the_last_flushed_window(Backend::memory()).await;
}

#[tokio::test]
async fn stream_reopens_after_the_last_flushed_window_on_sled() {
    stream_reopens_after_the_last_flushed_window(Backend::sled()).await;
}

#[tokio::test]
async fn a_cancelled_stream_saves_its_drained_window_and_resumes_after_it() {
    let backend = Backend::memory();
    let tail = Tail::new(5);
    let run = RunId::new();
    let store = FaultyStore::wrapping(backend.open());
    let first = workflow(tail.clone(), store.clone());
    let token = CancellationToken::new();
    let running = first.orchestrate_with(
        S::Work,
        RunOptions::new()
            .with_run_id(run)
            .with_cancellation(token.clone()),
    );
    let cancel = async {
        tail.pulled.subscribe().wait_for(|&n| n >= 5).await.unwrap();
        token.cancel();
    };
    let (result, ()) = tokio::join!(running, cancel);
    assert!(matches!(result.unwrap_err(), CanoError::Cancelled(_)));
    // [0, 1, 2] by count, then [3, 4] drained by the cancellation.
    assert_eq!(*tail.flushed.lock().unwrap(), [vec![0, 1, 2], vec![3, 4]]);

    *tail.stall_after.lock().unwrap() = None;
    let resumed = workflow(tail.clone(), FaultyStore::wrapping(backend.open()));
    assert_eq!(resumed.resume_from(run).await.unwrap(), S::Done);
    assert_eq!(*tail.opened.lock().unwrap(), [None, Some(4)]);
    assert_eq!(
        tail.flushed.lock().unwrap()[2..],
        [vec![5, 6, 7], vec![8, 9]]
    );
}

// ---------------------------------------------------------------- splits

/// A batch of 40 items under a name of its own, so that two can run side by side.
#[derive(Clone)]
struct Named(&'static str);

impl BatchTask<S> for Named {
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
        Ok((0..40).collect())
    }
    async fn process_item(&self, _res: &Resources, item: &u32) -> Result<u32, CanoError> {
        tokio::task::yield_now().await;
        Ok(*item)
    }
    async fn finish(
        &self,
        _res: &Resources,
        results: Vec<ItemResult<u32>>,
    ) -> Result<TaskResult<S>, CanoError> {
        assert_eq!(results.len(), 40);
        Ok(TaskResult::Single(S::Done))
    }
    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new().with_concurrency(4)
    }
    fn name(&self) -> std::borrow::Cow<'static, str> {
        self.0.into()
    }
}
as_task!(Named, BatchTask, run_batch, S);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_a_split_save_their_progress_in_order() {
    use cano_split::{Branches, JoinConfig, JoinStrategy, SplitExt};
    let backend = Backend::sled();
    let store = FaultyStore::wrapping(backend.open());
    let workflow = Workflow::<S>::bare()
        .register_split(
            S::Work,
            Branches::new()
                .with(Named("eu"))
                .with(Named("us"))
                .with(Named("apac")),
            JoinConfig::new(JoinStrategy::All, S::Done),
        )
        .add_exit_state(S::Done)
        .with_shared_checkpoint_store(store.clone())
        .with_retention(cano_core::Retention::KeepFinished);
    let run = RunId::new();
    let end = workflow
        .orchestrate_with(S::Work, RunOptions::new().with_run_id(run))
        .await
        .unwrap();
    assert_eq!(end, S::Done);
    // Three branches saved progress at once; the store took every row in sequence
    // (it refuses a gap or a repeat), and each branch kept its own keys.
    let rows = store.appended();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        rows.iter()
            .filter(|r| r.kind == cano_core::RowKind::Step)
            .count()
            >= 3
    );
    for name in ["eu", "us", "apac"] {
        let saved = rows
            .iter()
            .flat_map(|r| r.data.entries.iter())
            .filter(|(k, v)| k.contains(&format!("\u{1}{name}\u{1}item/")) && v.is_some())
            .map(|(k, _)| k.clone())
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert_eq!(saved, 40, "{name}: every item's output was saved");
    }
}
