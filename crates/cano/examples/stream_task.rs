//! A stream task: page-view events arrive on a channel; they are counted in windows of
//! 5 events or 300 ms, whichever comes first, and the stream stops when a window sees
//! the "deploy" marker. The cursor (the last event's offset) is saved after every
//! window, so a resumed run would reopen the feed right after it.
//!
//! Run it with `cargo run --example stream_task`.

use std::time::Duration;

use cano::prelude::*;
use cano::{ItemStream, StreamConfig, StreamSummary, WindowOutcome};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Analytics {
    Consume,
    FeedEnded,
    Deployed,
}

#[derive(Debug, Clone)]
struct Event {
    offset: u64,
    page: &'static str,
}

/// Feeds the channel: bursts of views, a quiet spell, then a deploy marker.
fn feed() -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let pages = ["/", "/pricing", "/docs", "/blog"];
        for offset in 0..20u64 {
            let pause = if offset == 8 { 700 } else { 40 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let page = if offset == 14 {
                "deploy"
            } else {
                pages[offset as usize % 4]
            };
            if tx.send(Event { offset, page }).await.is_err() {
                return;
            }
        }
    });
    rx
}

struct PageViews {
    started: Instant,
}

#[task::stream(state = Analytics)]
impl PageViews {
    type Item = Event;
    type Cursor = u64;

    async fn open(
        &self,
        _res: &Resources,
        cursor: Option<u64>,
    ) -> Result<ItemStream<Event>, CanoError> {
        let after = cursor.map_or(0, |c| c + 1);
        let events = receiver_stream(feed()).filter(move |e| std::future::ready(e.offset >= after));
        Ok(Box::pin(events.map(Ok)))
    }

    async fn flush(
        &self,
        _res: &Resources,
        window: Vec<Event>,
    ) -> Result<WindowOutcome<u64, Analytics>, CanoError> {
        let last = window.last().map_or(0, |e| e.offset);
        let pages: Vec<&str> = window.iter().map(|e| e.page).collect();
        println!(
            "  {:>4} ms  window of {}: {pages:?}",
            self.started.elapsed().as_millis(),
            window.len()
        );
        if pages.contains(&"deploy") {
            return Ok(WindowOutcome::Stop(last, Analytics::Deployed));
        }
        Ok(WindowOutcome::Continue(last))
    }

    async fn finish(
        &self,
        _res: &Resources,
        summary: StreamSummary<u64>,
    ) -> Result<TaskResult<Analytics>, CanoError> {
        println!("  feed ended after {} windows", summary.windows);
        Ok(TaskResult::Single(Analytics::FeedEnded))
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig::new()
            .with_max_items(5)
            .with_max_age(Duration::from_millis(300))
    }
}

/// A channel receiver as a stream.
fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let dir = tempfile::tempdir().map_err(|e| CanoError::store(e.to_string()))?;
    let workflow = Workflow::bare()
        .register(
            Analytics::Consume,
            PageViews {
                started: Instant::now(),
            },
        )
        .add_exit_states([Analytics::FeedEnded, Analytics::Deployed])
        .with_checkpoint_store(SledCheckpointStore::open(dir.path())?)
        .with_workflow_id("analytics");
    let end = workflow.orchestrate(Analytics::Consume).await?;
    println!("-> {end:?}");
    Ok(())
}
