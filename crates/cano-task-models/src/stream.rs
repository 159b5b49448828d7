//! Stream tasks: consume an async stream item by item, handled in windows.
//!
//! A [`StreamTask`] opens a stream (after a cursor, when resuming), and the engine
//! gathers its items into windows closed by count or by age; each window goes to
//! [`flush`](StreamTask::flush), which returns the cursor after it and whether to go
//! on. In a workflow with a checkpoint store the cursor is saved after every window,
//! so a run resumed after a crash reopens the stream after the last flushed window.
//! Cancelling the run flushes the window in hand before the run stops.

use std::borrow::Cow;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use cano_core::checkpoint::{Bincode, Codec};
use cano_core::{
    CanoError, DefaultKey, DrainGuard, Resources, RunContext, TaskConfig, TaskProgress, TaskResult,
    short_type_name,
};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::util::{caught, decode};

/// The stream a [`StreamTask`] opens: items, or errors the task's
/// [`ItemErrorPolicy`] deals with.
pub type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, CanoError>> + Send + 'static>>;

/// What a flushed window decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowOutcome<C, S> {
    /// Go on; the stream stands at this cursor (saved before the next window).
    Continue(C),
    /// Stop consuming, at this cursor, and move to this state.
    Stop(C, S),
}

/// What a stream error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemErrorPolicy {
    /// The first error fails the task; the window in hand is not flushed (a resumed
    /// run reads it again after the last saved cursor). The default.
    #[default]
    FailFast,
    /// The failed item is dropped and the stream goes on; the count is reported to
    /// [`finish`](StreamTask::finish).
    Skip,
    /// The window in hand is dropped and the stream reopened after the last flushed
    /// cursor, `delay` later, up to `max_errors` times in all; one more error fails the
    /// task.
    Retry {
        /// How many errors the whole stream may see.
        max_errors: u32,
        /// The pause before reopening.
        delay: Duration,
    },
}

/// When a window is flushed and what a stream error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    max_items: usize,
    max_age: Option<Duration>,
    on_item_error: ItemErrorPolicy,
}

impl Default for StreamConfig {
    /// Windows of up to 100 items with no age limit; the first stream error fails.
    fn default() -> Self {
        Self {
            max_items: 100,
            max_age: None,
            on_item_error: ItemErrorPolicy::FailFast,
        }
    }
}

impl StreamConfig {
    /// The default configuration (see [`StreamConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Flushes a window once it holds `max_items` items (at least 1).
    pub fn with_max_items(mut self, max_items: usize) -> Self {
        self.max_items = max_items;
        self
    }

    /// Flushes a window once its first item is `max_age` old, however few items it has.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// What a stream error does.
    pub fn with_item_error_policy(mut self, policy: ItemErrorPolicy) -> Self {
        self.on_item_error = policy;
        self
    }

    /// The largest window.
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The oldest a window's first item gets before it is flushed, if bounded.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// What a stream error does.
    pub fn item_error_policy(&self) -> ItemErrorPolicy {
        self.on_item_error
    }
}

/// What [`finish`](StreamTask::finish) learns about a stream that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary<C> {
    /// The cursor after the last flushed window (`None` if none was flushed, ever).
    pub cursor: Option<C>,
    /// Windows flushed by this attempt.
    pub windows: u64,
    /// Items flushed by this attempt.
    pub items: u64,
    /// Items dropped under [`ItemErrorPolicy::Skip`].
    pub skipped: u64,
}

/// Consumes a stream in windows. Write `#[task::stream]` on the impl block (through the
/// `cano` facade): it lets the block use `async fn` and makes the type a
/// [`Task`](cano_core::Task), registered with `Workflow::register`.
#[async_trait]
pub trait StreamTask<S, K = DefaultKey>: Send + Sync + 'static {
    /// One element of the stream.
    type Item: Send + 'static;
    /// Where the stream stands after a window (an offset, a sequence number, a
    /// timestamp); saved after each window when the run is checkpointed.
    type Cursor: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// Opens the stream, after `cursor` (`None`: from the start).
    async fn open(
        &self,
        res: &Resources<K>,
        cursor: Option<Self::Cursor>,
    ) -> Result<ItemStream<Self::Item>, CanoError>;

    /// Handles one window of items and says where the stream stands after it.
    async fn flush(
        &self,
        res: &Resources<K>,
        window: Vec<Self::Item>,
    ) -> Result<WindowOutcome<Self::Cursor, S>, CanoError>;

    /// The stream ended (every window flushed): returns the next state.
    async fn finish(
        &self,
        res: &Resources<K>,
        summary: StreamSummary<Self::Cursor>,
    ) -> Result<TaskResult<S>, CanoError>;

    /// Window bounds and the error policy.
    fn stream_config(&self) -> StreamConfig {
        StreamConfig::default()
    }

    /// How the engine runs the whole stream as one attempt: no retries by default.
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    /// The name used in errors, observer events and saved progress: the type's name by
    /// default.
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(short_type_name::<Self>())
    }
}

/// The progress key of the cursor.
const CURSOR: &str = "cursor";

/// What the consuming loop keeps between windows.
struct Consumer<'a, T: StreamTask<S, K> + ?Sized, S, K> {
    task: &'a T,
    res: &'a Resources<K>,
    name: Cow<'static, str>,
    progress: Option<TaskProgress>,
    summary: StreamSummary<T::Cursor>,
    run: Option<RunContext>,
    /// Held while a window has items: a cancellation of the run then waits for it to
    /// be flushed. An empty window holds nothing, so a cancellation while waiting for
    /// items (or reopening the stream) stops the run at once.
    drain: Option<DrainGuard>,
}

impl<T, S, K> Consumer<'_, T, S, K>
where
    T: StreamTask<S, K> + ?Sized,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    /// A window starts filling: hold the run's cancellation until it is flushed.
    fn filling(&mut self) {
        if self.drain.is_none() {
            self.drain = self.run.as_ref().and_then(RunContext::hold_drain);
        }
    }

    /// Flushes `window` and saves the cursor it ends at; the next state if it stops.
    async fn flush(&mut self, window: Vec<T::Item>) -> Result<Option<S>, CanoError> {
        let flushed = self.flush_and_save(window).await;
        self.drain = None;
        flushed
    }

    async fn flush_and_save(&mut self, window: Vec<T::Item>) -> Result<Option<S>, CanoError> {
        let size = window.len() as u64;
        let (cursor, stop) = match caught(self.task.flush(self.res, window)).await? {
            WindowOutcome::Continue(cursor) => (cursor, None),
            WindowOutcome::Stop(cursor, next) => (cursor, Some(next)),
        };
        if let Some(progress) = &self.progress {
            progress.put(CURSOR, Bincode::encode(&cursor)?);
            progress.save().await?;
        }
        self.summary.cursor = Some(cursor);
        self.summary.windows += 1;
        self.summary.items += size;
        Ok(stop)
    }

    async fn open(&self) -> Result<ItemStream<T::Item>, CanoError> {
        caught(self.task.open(self.res, self.summary.cursor.clone()))
            .await
            .map_err(|e| {
                CanoError::task_execution(format!(
                    "stream task `{}` could not open its stream: {e}",
                    self.name
                ))
                .with_source(e)
            })
    }
}

/// Consumes `task`'s stream to its end or to a window that stops it: what the `Task`
/// impl that `#[task::stream]` writes calls.
pub async fn run_stream<T, S, K>(task: &T, res: &Resources<K>) -> Result<TaskResult<S>, CanoError>
where
    T: StreamTask<S, K> + ?Sized,
    S: Send + 'static,
    K: Send + Sync + 'static,
{
    let name = task.name();
    let config = task.stream_config();
    if config.max_items == 0 {
        return Err(CanoError::configuration(format!(
            "stream task `{name}` has windows of at most 0 items, so no window could hold an item"
        ))
        .with_hint("use StreamConfig::with_max_items(1) or more"));
    }
    let progress = TaskProgress::current(&name);
    let cursor = match progress.as_ref().and_then(|p| p.get(CURSOR)) {
        Some(bytes) => Some(decode::<T::Cursor>(&bytes, &name, "cursor")?),
        None => None,
    };
    let run = RunContext::current();
    let mut consumer = Consumer {
        task,
        res,
        name,
        progress,
        summary: StreamSummary {
            cursor,
            windows: 0,
            items: 0,
            skipped: 0,
        },
        run: run.clone(),
        drain: None,
    };
    let mut stream = consumer.open().await?;
    let mut window: Vec<T::Item> = Vec::new();
    let mut window_due: Option<Instant> = None;
    let mut errors = 0u32;
    let cancelled = async {
        match &run {
            Some(run) => run.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancelled);
    let stop = loop {
        let due = async {
            match window_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut cancelled => {
                if !window.is_empty() {
                    consumer.flush(std::mem::take(&mut window)).await?;
                }
                return Err(CanoError::cancelled(format!(
                    "stream task `{}` was cancelled; {} windows were flushed, the last one after the cancellation",
                    consumer.name, consumer.summary.windows
                )));
            }
            () = due => {
                window_due = None;
                if let Some(next) = consumer.flush(std::mem::take(&mut window)).await? {
                    break Some(next);
                }
            }
            item = stream.next() => match item {
                None => {
                    if !window.is_empty()
                        && let Some(next) = consumer.flush(std::mem::take(&mut window)).await? {
                            break Some(next);
                        }
                    break None;
                }
                Some(Ok(item)) => {
                    if window.is_empty() {
                        // An age past what the clock can name is no limit.
                        window_due = config.max_age.and_then(|age| Instant::now().checked_add(age));
                        consumer.filling();
                    }
                    window.push(item);
                    if window.len() >= config.max_items {
                        window_due = None;
                        if let Some(next) = consumer.flush(std::mem::take(&mut window)).await? {
                            break Some(next);
                        }
                    }
                }
                Some(Err(error)) => match config.on_item_error {
                    ItemErrorPolicy::FailFast => {
                        return Err(stream_failed(&consumer.name, window.len(), error));
                    }
                    ItemErrorPolicy::Skip => consumer.summary.skipped += 1,
                    ItemErrorPolicy::Retry { max_errors, delay } => {
                        errors += 1;
                        if errors > max_errors {
                            return Err(CanoError::retry_exhausted(format!(
                                "stream task `{}` saw {errors} stream errors, more than its budget of {max_errors}; last error: {error}",
                                consumer.name
                            ))
                            .with_hint("fix the source, or raise ItemErrorPolicy::Retry's max_errors")
                            .with_source(error));
                        }
                        window.clear();
                        window_due = None;
                        consumer.drain = None;
                        tokio::time::sleep(delay).await;
                        stream = consumer.open().await?;
                    }
                },
            }
        }
    };
    let next = match stop {
        Some(next) => TaskResult::Single(next),
        None => caught(task.finish(res, consumer.summary.clone())).await?,
    };
    if let Some(progress) = &consumer.progress {
        progress.clear();
    }
    Ok(next)
}

fn stream_failed(name: &str, unflushed: usize, error: CanoError) -> CanoError {
    CanoError::task_execution(format!(
        "the stream of task `{name}` failed with {unflushed} items not yet flushed: {error}"
    ))
    .with_hint("those items are read again after the last saved cursor on a resume; use ItemErrorPolicy::Skip or Retry to ride out bad items")
    .with_source(error)
}
