//! A stepped task: copying a paginated API page by page. The cursor (the next page
//! token) is saved after every page, so when the copy fails half way and the run is
//! resumed, it continues from the last saved page instead of starting over.
//!
//! Run it with `cargo run --example stepped_task`.

use std::sync::atomic::{AtomicBool, Ordering};

use cano::prelude::*;
use cano::{DurableStore, MemoryCheckpointStore, Retention, RunId, RunOptions};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Sync {
    CopyPages,
    Done,
}

/// Where the copy stands: the next page to fetch and how many items so far.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Cursor {
    next_page: u32,
    items: u32,
}

/// Copies 8 pages of 25 items; the API goes down at page 5 the first time.
struct CopyPages {
    outage: AtomicBool,
}

#[async_trait::async_trait]
impl SteppedTask<Sync> for CopyPages {
    type Cursor = Cursor;

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    async fn step(
        &self,
        _: &Resources,
        cursor: Option<Cursor>,
    ) -> Result<StepOutcome<Cursor, Sync>, CanoError> {
        let cursor = cursor.unwrap_or(Cursor {
            next_page: 1,
            items: 0,
        });
        if cursor.next_page == 5 && self.outage.swap(false, Ordering::SeqCst) {
            println!("  page 5: the API is down");
            return Err(CanoError::task_execution("HTTP 503 from the API"));
        }
        let items = cursor.items + 25;
        println!(
            "  page {}: copied 25 items ({items} in all)",
            cursor.next_page
        );
        if cursor.next_page == 8 {
            DurableStore::current()?.put("items", &items)?;
            return Ok(StepOutcome::done(Sync::Done));
        }
        Ok(StepOutcome::More(Cursor {
            next_page: cursor.next_page + 1,
            items,
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let workflow = Workflow::bare()
        .register_stepped(
            Sync::CopyPages,
            CopyPages {
                outage: AtomicBool::new(true),
            },
        )
        .add_exit_state(Sync::Done)
        .with_checkpoint_store(MemoryCheckpointStore::new())
        .with_retention(Retention::KeepFinished);

    let run = RunId::new();
    println!("== First attempt ==");
    let err = workflow
        .orchestrate_with(Sync::CopyPages, RunOptions::new().with_run_id(run))
        .await
        .unwrap_err();
    println!("run {run} failed: {err}");

    println!("\n== Resumed: continues at page 5 ==");
    let end = workflow.resume_from(run).await?;
    println!("run {run} ended in {end:?}");
    Ok(())
}
