//! Stream tasks on tokio's paused clock: windows by count and by age, a window that
//! stops the stream, the item error policies, cancellation flushing the window.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cano_core::{CancellationToken, CanoError, Resources, RunOptions, TaskResult, Workflow};
use cano_task_models::{
    ItemErrorPolicy, ItemStream, StreamConfig, StreamSummary, StreamTask, WindowOutcome, run_stream,
};
use futures::StreamExt;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Consume,
    Done,
    Halted,
}

/// A flushed window: when (seconds since the start) and what.
type Window = (u64, Vec<u32>);

/// What the source sends: an item, an error, or the end of the stream.
#[derive(Debug, Clone)]
enum Event {
    Item(u32),
    Error,
}

/// Reads items from a scripted source; `open(cursor)` replays the script after the
/// cursor (the number of items flushed so far), the way a log or a queue would.
#[derive(Clone)]
struct Reader {
    script: Arc<Vec<(u64, Event)>>,
    /// After this many script entries the stream stays open without items.
    hold_after: Option<usize>,
    config: StreamConfig,
    stop_at: Option<u32>,
    flushed: Arc<Mutex<Vec<Window>>>,
    opened: Arc<Mutex<Vec<Option<u32>>>>,
    pulled: Arc<tokio::sync::watch::Sender<u32>>,
    started: Instant,
    summary: Arc<Mutex<Option<StreamSummary<u32>>>>,
}

impl Reader {
    fn new(script: Vec<(u64, Event)>, config: StreamConfig) -> Self {
        Self {
            script: Arc::new(script),
            hold_after: None,
            config,
            stop_at: None,
            flushed: Arc::default(),
            opened: Arc::default(),
            pulled: Arc::new(tokio::sync::watch::channel(0).0),
            started: Instant::now(),
            summary: Arc::default(),
        }
    }

    fn windows(&self) -> Vec<Window> {
        self.flushed.lock().unwrap().clone()
    }
}

fn items(values: impl IntoIterator<Item = u32>, gap: u64) -> Vec<(u64, Event)> {
    values.into_iter().map(|v| (gap, Event::Item(v))).collect()
}

#[async_trait::async_trait]
impl StreamTask<S> for Reader {
    type Item = u32;
    type Cursor = u32;

    async fn open(
        &self,
        _res: &Resources,
        cursor: Option<u32>,
    ) -> Result<ItemStream<u32>, CanoError> {
        self.opened.lock().unwrap().push(cursor);
        let after = cursor.map_or(0, |c| c + 1);
        let script: Vec<(u64, Event)> = self
            .script
            .iter()
            .filter(|(_, e)| match e {
                Event::Item(v) => *v >= after,
                // A source reopened after a flushed window has recovered.
                Event::Error => cursor.is_none(),
            })
            .cloned()
            .collect();
        let hold = self.hold_after;
        let pulled = self.pulled.clone();
        let emitted =
            futures::stream::iter(script.into_iter().enumerate()).then(move |(n, (gap, event))| {
                let pulled = pulled.clone();
                async move {
                    if hold.is_some_and(|h| n >= h) {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_secs(gap)).await;
                    pulled.send_modify(|n| *n += 1);
                    match event {
                        Event::Item(v) => Ok(v),
                        Event::Error => Err(CanoError::resource(format!(
                            "broker connection reset before entry {n}"
                        ))),
                    }
                }
            });
        Ok(Box::pin(emitted))
    }

    async fn flush(
        &self,
        _res: &Resources,
        window: Vec<u32>,
    ) -> Result<WindowOutcome<u32, S>, CanoError> {
        let last = *window.last().expect("windows are never empty");
        let stop = self.stop_at.is_some_and(|at| window.contains(&at));
        self.flushed
            .lock()
            .unwrap()
            .push((self.started.elapsed().as_secs(), window));
        Ok(match stop {
            true => WindowOutcome::Stop(last, S::Halted),
            false => WindowOutcome::Continue(last),
        })
    }

    async fn finish(
        &self,
        _res: &Resources,
        summary: StreamSummary<u32>,
    ) -> Result<TaskResult<S>, CanoError> {
        *self.summary.lock().unwrap() = Some(summary);
        Ok(TaskResult::Single(S::Done))
    }

    fn stream_config(&self) -> StreamConfig {
        self.config
    }
}
as_task!(Reader, StreamTask, run_stream, S);

fn workflow(reader: &Reader) -> Workflow<S> {
    Workflow::bare()
        .register(S::Consume, reader.clone())
        .add_exit_states([S::Done, S::Halted])
}

#[tokio::test(start_paused = true)]
async fn windows_close_by_count_and_the_rest_is_flushed_at_the_end() {
    let reader = Reader::new(items(0..7, 1), StreamConfig::new().with_max_items(3));
    assert_eq!(
        workflow(&reader).orchestrate(S::Consume).await.unwrap(),
        S::Done
    );
    assert_eq!(
        reader.windows(),
        [(3, vec![0, 1, 2]), (6, vec![3, 4, 5]), (7, vec![6])]
    );
    let summary = reader.summary.lock().unwrap().clone().unwrap();
    assert_eq!(
        summary,
        StreamSummary {
            cursor: Some(6),
            windows: 3,
            items: 7,
            skipped: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn windows_close_by_age_when_items_are_slow() {
    // Items at 1, 2, 3 s, then at 13 and 14 s; windows of 100 items or 5 s.
    let mut script = items(0..3, 1);
    script.extend(
        items(3..5, 10)
            .into_iter()
            .enumerate()
            .map(|(i, (_, e))| (if i == 0 { 10 } else { 1 }, e)),
    );
    let reader = Reader::new(
        script,
        StreamConfig::new()
            .with_max_items(100)
            .with_max_age(Duration::from_secs(5)),
    );
    workflow(&reader).orchestrate(S::Consume).await.unwrap();
    // The first window is due 5 s after its first item (at 1 s); the second ends with
    // the stream, before it is due.
    assert_eq!(reader.windows(), [(6, vec![0, 1, 2]), (14, vec![3, 4])]);
}

#[tokio::test(start_paused = true)]
async fn a_window_can_stop_the_stream_and_choose_the_state() {
    let mut reader = Reader::new(items(0..100, 1), StreamConfig::new().with_max_items(4));
    reader.stop_at = Some(5);
    assert_eq!(
        workflow(&reader).orchestrate(S::Consume).await.unwrap(),
        S::Halted
    );
    assert_eq!(reader.windows().len(), 2);
    assert!(
        reader.summary.lock().unwrap().is_none(),
        "finish is not called after a stop"
    );
}

fn with_error() -> Vec<(u64, Event)> {
    let mut script = items(0..4, 1);
    script.insert(2, (1, Event::Error));
    script
}

#[tokio::test(start_paused = true)]
async fn fail_fast_fails_mid_window_without_flushing_it() {
    let reader = Reader::new(with_error(), StreamConfig::new().with_max_items(10));
    let err = workflow(&reader).orchestrate(S::Consume).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("2 items not yet flushed") && text.contains("connection reset"),
        "{text}"
    );
    assert!(
        text.contains("Reader") && text.contains("Consume"),
        "{text}"
    );
    assert!(reader.windows().is_empty());
}

#[tokio::test(start_paused = true)]
async fn skip_drops_the_bad_item_and_counts_it() {
    let reader = Reader::new(
        with_error(),
        StreamConfig::new()
            .with_max_items(10)
            .with_item_error_policy(ItemErrorPolicy::Skip),
    );
    workflow(&reader).orchestrate(S::Consume).await.unwrap();
    assert_eq!(reader.windows(), [(5, vec![0, 1, 2, 3])]);
    assert_eq!(reader.summary.lock().unwrap().as_ref().unwrap().skipped, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_reopens_after_the_last_flushed_window() {
    // Windows of 2: [0, 1] is flushed, then the error drops the partial window and
    // the stream is reopened after item 1, 30 s later. The reopened stream has no
    // error (the source recovered).
    let mut script = items(0..4, 1);
    script.insert(3, (1, Event::Error));
    let reader = Reader::new(
        script,
        StreamConfig::new()
            .with_max_items(2)
            .with_item_error_policy(ItemErrorPolicy::Retry {
                max_errors: 1,
                delay: Duration::from_secs(30),
            }),
    );
    let opened = reader.opened.clone();
    workflow(&reader).orchestrate(S::Consume).await.unwrap();
    assert_eq!(*opened.lock().unwrap(), [None, Some(1)]);
    let windows = reader.windows();
    assert_eq!(windows[0], (2, vec![0, 1]));
    assert_eq!(windows[1].1, [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn retry_beyond_the_budget_fails() {
    let script = vec![(1, Event::Item(0)), (1, Event::Error)];
    let reader = Reader::new(
        script,
        StreamConfig::new().with_item_error_policy(ItemErrorPolicy::Retry {
            max_errors: 2,
            delay: Duration::from_secs(1),
        }),
    );
    let err = workflow(&reader).orchestrate(S::Consume).await.unwrap_err();
    assert!(matches!(err, CanoError::RetryExhausted(_)), "{err}");
    assert_eq!(reader.opened.lock().unwrap().len(), 3);
}

/// Runs `reader` and cancels the run once `pulled` items came out of its stream.
async fn cancel_after(reader: &Reader, pulled: u32) -> Result<S, CanoError> {
    let token = CancellationToken::new();
    let workflow = workflow(reader);
    let run = workflow.orchestrate_with(
        S::Consume,
        RunOptions::new().with_cancellation(token.clone()),
    );
    let cancel = async {
        let mut seen = reader.pulled.subscribe();
        seen.wait_for(|&n| n >= pulled).await.unwrap();
        token.cancel();
    };
    tokio::join!(run, cancel).0
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_run_flushes_the_window_in_hand() {
    let mut reader = Reader::new(items(0..10, 1), StreamConfig::new().with_max_items(100));
    reader.hold_after = Some(4);
    let result = cancel_after(&reader, 4).await;
    let err = result.unwrap_err();
    assert!(matches!(err, CanoError::Cancelled(_)), "{err}");
    assert_eq!(reader.windows(), [(4, vec![0, 1, 2, 3])]);
}

#[tokio::test]
async fn a_window_of_zero_items_is_refused() {
    let reader = Reader::new(items(0..1, 0), StreamConfig::new().with_max_items(0));
    let err = workflow(&reader).orchestrate(S::Consume).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_will_not_open_fails_clearly() {
    struct Closed;
    #[async_trait::async_trait]
    impl StreamTask<S> for Closed {
        type Item = u32;
        type Cursor = u32;
        async fn open(
            &self,
            _res: &Resources,
            _c: Option<u32>,
        ) -> Result<ItemStream<u32>, CanoError> {
            Err(CanoError::resource("topic `orders` does not exist"))
        }
        async fn flush(
            &self,
            _res: &Resources,
            _w: Vec<u32>,
        ) -> Result<WindowOutcome<u32, S>, CanoError> {
            unreachable!()
        }
        async fn finish(
            &self,
            _res: &Resources,
            _s: StreamSummary<u32>,
        ) -> Result<TaskResult<S>, CanoError> {
            unreachable!()
        }
    }
    as_task!(Closed, StreamTask, run_stream, S);
    let workflow = Workflow::bare()
        .register(S::Consume, Closed)
        .add_exit_state(S::Done);
    let err = workflow.orchestrate(S::Consume).await.unwrap_err();
    assert!(
        err.to_string().contains("could not open its stream") && err.to_string().contains("orders"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_while_waiting_for_items_stops_at_once() {
    // [0, 1, 2] fills a window and is flushed; then the source goes quiet for good.
    let mut reader = Reader::new(items(0..10, 1), StreamConfig::new().with_max_items(3));
    reader.hold_after = Some(3);
    let result = cancel_after(&reader, 3).await;
    assert!(matches!(result.unwrap_err(), CanoError::Cancelled(_)));
    assert_eq!(reader.windows(), [(3, vec![0, 1, 2])]);
}
