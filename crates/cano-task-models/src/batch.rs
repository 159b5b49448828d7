//! Batch tasks: load a list of items, process each (several at a time, each retried on
//! its own), then decide the next state from every item's result.
//!
//! Results come back in the order the items were loaded, one per item, failures
//! included: a failed or panicking item is a failed result for
//! [`finish`](BatchTask::finish) to judge, never a crashed run. In a workflow with a
//! checkpoint store every finished item's output is saved, so a run resumed after a
//! crash processes only the items that had not finished.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{
    CanoError, DefaultKey, Resources, RetryMode, RunContext, TaskConfig, TaskProgress, TaskResult,
    short_type_name,
};
use cano_retry::{AttemptError, ErrorClass, Retry, RetryError};
use futures::StreamExt;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::AssertUnwindSafe;
use tokio::task::JoinSet;

use crate::util::{caught, decode};

/// How a batch processes its items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    concurrency: usize,
    item_retry: RetryMode,
    item_timeout: Option<Duration>,
    worker_threads: bool,
}

impl Default for BatchConfig {
    /// Up to 16 items at a time, each tried once with no timeout, all inside the
    /// state's own tokio task.
    fn default() -> Self {
        Self {
            concurrency: 16,
            item_retry: RetryMode::None,
            item_timeout: None,
            worker_threads: false,
        }
    }
}

impl BatchConfig {
    /// The default configuration (see [`BatchConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Processes at most `limit` items at once (at least 1).
    pub fn with_concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit;
        self
    }

    /// Retries a failed item as `mode` says. Errors marked permanent are not retried.
    pub fn with_item_retry(mut self, mode: RetryMode) -> Self {
        self.item_retry = mode;
        self
    }

    /// Fails any attempt at an item that runs longer than `timeout` (then retried like
    /// any other failure).
    pub fn with_item_timeout(mut self, timeout: Duration) -> Self {
        self.item_timeout = Some(timeout);
        self
    }

    /// Runs each item on its own tokio task, so items run in parallel on the runtime's
    /// worker threads (for CPU-heavy items). By default items take turns on the state's
    /// own task, which is cheaper for items that mostly wait on I/O. (Called outside a
    /// workflow run, [`run_batch`] has no shared resources to hand the items' tasks,
    /// and keeps them on its own.)
    pub fn on_worker_threads(mut self) -> Self {
        self.worker_threads = true;
        self
    }

    /// The most items processed at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The retry mode of each item.
    pub fn item_retry(&self) -> RetryMode {
        self.item_retry
    }

    /// The timeout of each attempt at an item, if any.
    pub fn item_timeout(&self) -> Option<Duration> {
        self.item_timeout
    }

    /// Whether items run on their own tokio tasks.
    pub fn runs_on_worker_threads(&self) -> bool {
        self.worker_threads
    }
}

/// One item's result, as [`finish`](BatchTask::finish) receives it.
pub type ItemResult<T> = Result<T, CanoError>;

/// Fan-out over data: [`load`](Self::load) the items,
/// [`process_item`](Self::process_item) each, [`finish`](Self::finish) with all the
/// results. Write `#[task::batch]` on the impl block (through the `cano` facade): it
/// makes the type a [`Task`](cano_core::Task), registered with `Workflow::register`.
///
/// The three steps are plain `async fn`s in the impl (no `#[async_trait]`): each
/// item's future is stored in the set of items in flight as it is, not boxed, so an
/// item costs one allocation (its slot in that set) and no more.
///
/// The macro also fills in two things a hand-written impl would otherwise lack: saving
/// each item's output in a checkpointed run when `ItemOutput` is serde
/// ([`item_codec`](Self::item_codec)), and copying the task to worker threads when it
/// is `Clone` ([`worker_copy`](Self::worker_copy)). A hand-written impl (without the
/// macro) returns `Some(ItemCodec::serde())` and `Some(self.clone())` from them.
///
/// cano 0.13's form works too: `process_item(&self, item)` without the resources,
/// [`concurrency`](Self::concurrency) and [`item_retry`](Self::item_retry) instead of
/// [`batch_config`](Self::batch_config), and, in an inherent block, `Item` and
/// `ItemOutput` read off `load` and `process_item`. Such a block gets 0.13's defaults:
/// one item at a time, and the whole batch retried as `TaskConfig::default()` says.
pub trait BatchTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// One unit of work.
    type Item: Send + Sync + 'static;
    /// What processing an item produces; saved per item when the run is checkpointed
    /// and the type is serde.
    type ItemOutput: Send + 'static;

    /// Loads the items. On a resumed run it must return the same items in the same
    /// order: saved outputs are matched to items by position (a batch whose item count
    /// changed starts over).
    fn load(
        &self,
        res: &Resources<K>,
    ) -> impl Future<Output = Result<Vec<Self::Item>, CanoError>> + Send;

    /// Processes one item.
    fn process_item(
        &self,
        res: &Resources<K>,
        item: &Self::Item,
    ) -> impl Future<Output = Result<Self::ItemOutput, CanoError>> + Send;

    /// Given every item's result, in load order, returns the next state.
    fn finish(
        &self,
        res: &Resources<K>,
        results: Vec<ItemResult<Self::ItemOutput>>,
    ) -> impl Future<Output = Result<TaskResult<S>, CanoError>> + Send;

    /// The most items processed at once (cano 0.13's setting; 0 is taken as 1). Used
    /// by the default [`batch_config`](Self::batch_config); 16 by default.
    fn concurrency(&self) -> usize {
        BatchConfig::default().concurrency()
    }

    /// How each item is retried (cano 0.13's setting). Used by the default
    /// [`batch_config`](Self::batch_config); no retries by default.
    fn item_retry(&self) -> RetryMode {
        RetryMode::None
    }

    /// Concurrency, per-item retries and timeout, where items run: by default
    /// [`concurrency`](Self::concurrency) and [`item_retry`](Self::item_retry).
    fn batch_config(&self) -> BatchConfig {
        BatchConfig::new()
            .with_concurrency(self.concurrency().max(1))
            .with_item_retry(self.item_retry())
    }

    /// How the engine runs the whole batch (load, items, finish as one attempt): no
    /// retries by default.
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    /// The name used in errors, observer events and saved progress: the type's name by
    /// default.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }

    /// How item outputs are saved in a checkpointed run; `None` (the default) saves
    /// none, and a resumed run processes every item again. `#[task::batch]` returns
    /// [`ItemCodec::serde`] when `ItemOutput` is serde.
    fn item_codec(&self) -> Option<ItemCodec<Self::ItemOutput>> {
        None
    }

    /// A copy of the task for items on worker threads
    /// ([`BatchConfig::on_worker_threads`]). `None` (the default) means the task
    /// cannot be copied: a batch that asks for worker threads then fails with a
    /// permanent `Configuration` error naming the task. `#[task::batch]` returns a
    /// clone when the type is `Clone`; a hand-written impl returns `Some(self.clone())`.
    fn worker_copy(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// How a batch's item outputs are written to and read from a run's saved progress.
pub struct ItemCodec<O> {
    encode: fn(&O) -> Result<Vec<u8>, CanoError>,
    decode: fn(&[u8]) -> Result<O, CanoError>,
}

impl<O> Clone for ItemCodec<O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for ItemCodec<O> {}

impl<O: Serialize + DeserializeOwned> ItemCodec<O> {
    /// Outputs in their serde encoding (bincode).
    pub fn serde() -> Self {
        Self {
            encode: |value| Bincode::encode(value),
            decode: |bytes| Bincode::decode(bytes),
        }
    }
}

/// What `#[task::batch]` uses to pick [`BatchTask::item_codec`] and
/// [`BatchTask::worker_copy`] by what the types can do (method resolution prefers an
/// impl on `&Probe` when its bounds hold, and falls back to the one on `Probe`).
#[doc(hidden)]
pub mod probe {
    use super::{DeserializeOwned, ItemCodec, Serialize};
    use std::marker::PhantomData;

    /// A type to ask about.
    pub struct Probe<T>(PhantomData<fn() -> T>);

    impl<T> Probe<T> {
        /// A probe for `T`.
        pub fn new() -> Self {
            Self(PhantomData)
        }
    }

    impl<T> Default for Probe<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Picked when the output is serde.
    pub trait SerdeCodec<O> {
        /// The serde codec.
        fn codec(&self) -> Option<ItemCodec<O>>;
    }
    impl<O: Serialize + DeserializeOwned> SerdeCodec<O> for &Probe<O> {
        fn codec(&self) -> Option<ItemCodec<O>> {
            Some(ItemCodec::serde())
        }
    }

    /// Picked otherwise.
    pub trait NoCodec<O> {
        /// No codec.
        fn codec(&self) -> Option<ItemCodec<O>>;
    }
    impl<O> NoCodec<O> for Probe<O> {
        fn codec(&self) -> Option<ItemCodec<O>> {
            None
        }
    }

    /// Picked when the task is `Clone`.
    pub trait CloneCopy<T> {
        /// A clone.
        fn copy_of(&self, task: &T) -> Option<T>;
    }
    impl<T: Clone> CloneCopy<T> for &Probe<T> {
        fn copy_of(&self, task: &T) -> Option<T> {
            Some(task.clone())
        }
    }

    /// Picked otherwise.
    pub trait NoCopy<T> {
        /// No copy.
        fn copy_of(&self, task: &T) -> Option<T>;
    }
    impl<T> NoCopy<T> for Probe<T> {
        fn copy_of(&self, _: &T) -> Option<T> {
            None
        }
    }
}

/// cano 0.13's name for what a type-erased batch item is.
pub type DefaultBatchItem = Box<dyn std::any::Any + Send + Sync>;

/// cano 0.13's name for what a type-erased batch item's output is.
pub type DefaultBatchItemOutput = Box<dyn std::any::Any + Send>;

/// The progress key of the item count, and the prefix of each item's saved output.
const COUNT: &str = "count";
const ITEM: &str = "item/";

fn item_key(index: usize) -> String {
    // Zero-padded so saved items list in order.
    format!("{ITEM}{index:010}")
}

pin_project_lite::pin_project! {
    /// One attempt at an item, a panic caught: all an item is when its batch neither
    /// retries nor times items out. It is the item's own future and its index, no
    /// more, since every item's future is moved into the set of items in flight (an
    /// `async` block would keep its arguments beside the future it builds from them,
    /// rust-lang/rust#62958, and make that move a larger copy). Written out rather
    /// than as `util::caught(..).map(..)`, which measured a third slower per item.
    struct Attempt<F> {
        #[pin]
        item: F,
        index: usize,
    }
}

impl<F, O> Future for Attempt<F>
where
    F: Future<Output = Result<O, CanoError>>,
{
    type Output = (usize, ItemResult<O>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // A panicking item is finished with its panic as the error; nothing polls it
        // again.
        let output = match std::panic::catch_unwind(AssertUnwindSafe(|| this.item.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => output,
            Err(panic) => Err(CanoError::from_panic(panic)),
        };
        Poll::Ready((*this.index, output))
    }
}

/// The first attempt at item `index` of `task`'s batch.
fn attempt<'a, T, S, K>(
    task: &'a T,
    res: &'a Resources<K>,
    item: &'a T::Item,
    index: usize,
) -> Attempt<impl Future<Output = ItemResult<T::ItemOutput>> + Send + 'a>
where
    T: BatchTask<S, K>,
    S: 'a,
    K: Send + Sync + 'static,
{
    Attempt {
        item: task.process_item(res, item),
        index,
    }
}

/// One item, tried as the batch's config says: a first attempt, then the retry loop
/// (built only if it failed).
async fn process<T, S, K>(
    task: &T,
    res: &Resources<K>,
    item: &T::Item,
    retry: Retry,
    index: usize,
) -> (usize, ItemResult<T::ItemOutput>)
where
    T: BatchTask<S, K>,
    K: Send + Sync + 'static,
{
    let first = match retry.timeout() {
        None => attempt(task, res, item, index)
            .await
            .1
            .map_err(AttemptError::Failed),
        Some(_) => retry.attempt(caught(task.process_item(res, item))).await,
    };
    let output = match first {
        Ok(output) => Ok(output),
        Err(first) => Box::pin(retry_item(first, task, res, item, retry, index)).await,
    };
    (index, output)
}

/// The retries of an item whose first attempt failed.
async fn retry_item<T, S, K>(
    first: AttemptError<CanoError>,
    task: &T,
    res: &Resources<K>,
    item: &T::Item,
    retry: Retry,
    index: usize,
) -> ItemResult<T::ItemOutput>
where
    T: BatchTask<S, K>,
    K: Send + Sync + 'static,
{
    let classify = |e: &CanoError| {
        if e.is_permanent() {
            ErrorClass::Permanent
        } else {
            ErrorClass::Retryable
        }
    };
    let attempt = || caught(task.process_item(res, item));
    match retry.continue_after(first, attempt, classify, |_| {}).await {
        Ok(output) => Ok(output),
        Err(RetryError::Permanent { error, .. }) => Err(error),
        Err(RetryError::Exhausted { attempts, last }) => {
            let last = match last {
                AttemptError::Failed(error) => error,
                AttemptError::TimedOut(limit) => {
                    CanoError::timeout(format!("item {index} did not finish within {limit:?}"))
                        .with_hint("raise BatchConfig::with_item_timeout, or make the item faster")
                }
            };
            if attempts == 1 {
                return Err(last);
            }
            Err(CanoError::retry_exhausted(format!(
                "item {index}: all {attempts} attempts failed; last error: {last}"
            ))
            .with_source(last))
        }
    }
}

type Spawned<T> = JoinSet<(usize, ItemResult<T>)>;

/// A progress row being written.
type Saving<'a> = Pin<Box<dyn Future<Output = Result<u64, CanoError>> + Send + 'a>>;

/// Where the items in flight run: on the state's task, or each on its own tokio task
/// (with what such a task needs to own: the workflow's resources and the run).
enum Lanes<F, T, K, B> {
    Local(FuturesUnordered<F>),
    Spawned {
        set: Spawned<T>,
        /// The task's copy the items share.
        task: Arc<B>,
        resources: Arc<Resources<K>>,
        run: RunContext,
    },
}

impl<F, T, K, B> Lanes<F, T, K, B>
where
    F: Future<Output = (usize, ItemResult<T>)>,
    T: Send + 'static,
{
    fn len(&self) -> usize {
        match self {
            Self::Local(set) => set.len(),
            Self::Spawned { set, .. } => set.len(),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, ItemResult<T>)>> {
        match self {
            Self::Local(set) => set.poll_next_unpin(cx),
            Self::Spawned { set, .. } => set.poll_join_next(cx).map(|joined| {
                // Items catch their own panics; a join error means the runtime is
                // shutting down, which nothing here can finish.
                joined.map(|joined| {
                    joined.unwrap_or_else(|e| {
                        (
                            usize::MAX,
                            Err(CanoError::cancelled(format!(
                                "an item's tokio task ended: {e}"
                            ))),
                        )
                    })
                })
            }),
        }
    }
}

/// What the batch loop woke up for.
enum Woke<T> {
    Item(usize, ItemResult<T>),
    Saved(Result<u64, CanoError>),
}

/// Loads, processes and finishes `task`'s batch: what the `Task` impl that
/// `#[task::batch]` writes calls.
pub async fn run_batch<T, S, K>(task: &T, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>
where
    T: BatchTask<S, K>,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    let name = task.name();
    let config = task.batch_config();
    if config.concurrency == 0 {
        return Err(CanoError::configuration(format!(
            "batch task `{name}` has a concurrency of 0, so no item could ever run"
        ))
        .with_hint("use BatchConfig::with_concurrency(1) or more"));
    }
    if config.item_timeout == Some(std::time::Duration::ZERO) {
        return Err(CanoError::configuration(format!(
            "batch task `{name}` has an item timeout of zero, which fails every item"
        ))
        .with_hint(
            "give BatchConfig::with_item_timeout a positive duration (Duration::MAX for none)",
        ));
    }
    let items: Vec<T::Item> = caught(task.load(res)).await.map_err(|e| {
        CanoError::task_execution(format!("batch task `{name}` could not load its items: {e}"))
            .with_source(e)
    })?;
    let count = items.len();
    let codec = task.item_codec();
    let progress = codec.and_then(|_| TaskProgress::current(&name));
    let mut results: Vec<Option<ItemResult<T::ItemOutput>>> = (0..count).map(|_| None).collect();
    if let (Some(progress), Some(codec)) = (&progress, codec) {
        restore(progress, &name, codec, &mut results)?;
    }
    let todo: Vec<usize> = (0..count).filter(|&i| results[i].is_none()).collect();
    let retry = Retry::new(config.item_retry).with_attempt_timeout(config.item_timeout);
    let plain = config.item_retry == RetryMode::None && config.item_timeout.is_none();
    let items = Arc::new(items);
    // Worker threads need the run's resources as an `Arc` (a workflow without
    // resources shares none: its items get an empty set, as this task did); outside
    // a workflow run there is no run to share, and items stay on this task.
    let shared = match config.worker_threads {
        true => RunContext::current().map(|run| {
            let resources = run
                .resources::<K>()
                .unwrap_or_else(|| Arc::new(Resources::default()));
            (resources, run)
        }),
        false => None,
    };
    let mut lanes = match shared {
        Some((resources, run)) => {
            let Some(copy) = task.worker_copy() else {
                return Err(CanoError::configuration(format!(
                    "batch task `{name}` asks for worker threads, but it cannot be copied to them"
                ))
                .with_hint("derive Clone on the task (with #[task::batch] on its impl), or implement BatchTask::worker_copy")
                .permanent());
            };
            Lanes::Spawned {
                set: JoinSet::new(),
                task: Arc::new(copy),
                resources,
                run,
            }
        }
        None => Lanes::Local(FuturesUnordered::new()),
    };
    let mut next = todo.into_iter();
    // At most one progress row is written at a time; outputs finished meanwhile go
    // into the next one (a group commit).
    let mut saving: Option<Saving<'_>> = None;
    let mut unsaved = false;
    loop {
        while lanes.len() < config.concurrency {
            let Some(index) = next.next() else { break };
            match &mut lanes {
                // A plain item is pushed as it is; one with retries or a timeout
                // is boxed, so that the common case keeps its futures small.
                Lanes::Local(set) if plain => {
                    set.push(Either::Left(attempt(task, res, &items[index], index)));
                }
                Lanes::Local(set) => {
                    set.push(Either::Right(Box::pin(process(
                        task,
                        res,
                        &items[index],
                        retry,
                        index,
                    ))));
                }
                Lanes::Spawned {
                    set,
                    task,
                    resources,
                    run,
                } => {
                    let (task, resources, items) = (task.clone(), resources.clone(), items.clone());
                    set.spawn(run.clone().scope(async move {
                        process::<T, S, K>(&*task, &resources, &items[index], retry, index).await
                    }));
                }
            }
        }
        if lanes.len() == 0 && saving.is_none() && !unsaved {
            break;
        }
        let woke = std::future::poll_fn(|cx| {
            if let Some(save) = saving.as_mut()
                && let Poll::Ready(saved) = save.as_mut().poll(cx)
            {
                return Poll::Ready(Woke::Saved(saved));
            }
            match lanes.poll_next(cx) {
                Poll::Ready(Some((index, output))) => Poll::Ready(Woke::Item(index, output)),
                _ => Poll::Pending,
            }
        })
        .await;
        match woke {
            Woke::Saved(saved) => {
                saving = None;
                saved?;
            }
            Woke::Item(index, output) => {
                let Some(slot) = results.get_mut(index) else {
                    return Err(output
                        .err()
                        .unwrap_or_else(|| CanoError::cancelled("an item's tokio task ended")));
                };
                if let (Some(progress), Some(codec), Ok(value)) = (&progress, codec, &output) {
                    progress.put(&item_key(index), (codec.encode)(value)?);
                    unsaved = true;
                }
                *slot = Some(output);
            }
        }
        if unsaved && saving.is_none() {
            if let Some(progress) = &progress {
                saving = Some(Box::pin(progress.save()));
            }
            unsaved = false;
        }
    }
    // Every item has a result once no lane is busy; a gap would be a bug here, and is
    // reported as that item's failure rather than a panic.
    let results = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            result.unwrap_or_else(|| {
                Err(CanoError::workflow(format!(
                    "item {index} of batch task `{name}` finished without a result"
                )))
            })
        })
        .collect();
    let next = caught(task.finish(res, results)).await?;
    if let Some(progress) = &progress {
        progress.clear();
    }
    Ok(next)
}

/// Puts the outputs a crashed run had saved back in `results`, or, when the saved
/// batch was of another size, forgets them.
fn restore<O>(
    progress: &TaskProgress,
    name: &str,
    codec: ItemCodec<O>,
    results: &mut [Option<ItemResult<O>>],
) -> Result<(), CanoError> {
    let count = results.len();
    let saved_count = match progress.get(COUNT) {
        Some(bytes) => Some(decode::<u64>(&bytes, name, "item count")?),
        None => None,
    };
    if saved_count != Some(count as u64) {
        progress.clear();
        progress.put(COUNT, Bincode::encode(&(count as u64))?);
        return Ok(());
    }
    for (key, bytes) in progress.entries() {
        let Some(index) = key.strip_prefix(ITEM).and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        if let Some(slot) = results.get_mut(index) {
            let output = (codec.decode)(&bytes).map_err(|e| {
                CanoError::store(format!(
                    "the saved item output of task `{name}` does not decode as a `{}`: {}",
                    std::any::type_name::<O>(),
                    e.message()
                ))
                .with_source(e)
                .with_hint("the type changed since the run was written; resume with the build that wrote it")
                .permanent()
            })?;
            *slot = Some(Ok(output));
        }
    }
    Ok(())
}
