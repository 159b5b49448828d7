//! A scheduler with three flows side by side: a cron flow (every 2 seconds, seconds
//! field), an interval flow (every 3 seconds, fixed delay, backing off when its
//! upstream flakes) and a manual flow triggered on demand. It runs for 8 seconds, or
//! until Ctrl-C, then stops gracefully: runs in flight get 2 seconds to finish.
//!
//! Run it with `cargo run --example scheduler_scheduling --features scheduler`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cano::FlowPolicy;
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Feed {
    Pull,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Report {
    Render,
    Sent,
}

/// Pulls a feed; every other call meets a flaky upstream.
struct Pull(AtomicU32);

#[task(state = Feed)]
impl Pull {
    async fn run_bare(&self) -> Result<TaskResult<Feed>, CanoError> {
        let call = self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if call % 2 == 1 {
            return Err(CanoError::task_execution("upstream answered 503"));
        }
        Ok(TaskResult::Single(Feed::Done))
    }

    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
}

struct Render;

#[task(state = Report)]
impl Render {
    async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(TaskResult::Single(Report::Sent))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let sync = Workflow::bare()
        .register(Feed::Pull, Pull(AtomicU32::new(0)))
        .add_exit_state(Feed::Done);
    let report = Workflow::bare()
        .register(Report::Render, Render)
        .add_exit_state(Report::Sent);
    let mut scheduler = Scheduler::new();
    scheduler.cron("heartbeat", report.clone(), Report::Render, "*/2 * * * * *")?;
    scheduler.manual("on-demand", report, Report::Render)?;
    // A workflow of another state type, with the full schedule and policy.
    scheduler.flow(
        "feed",
        sync,
        Feed::Pull,
        Schedule::every(Duration::from_secs(3))?,
        FlowPolicy::new()
            .with_backoff(BackoffPolicy::new(Duration::from_secs(1)))
            .trip_after(5),
    )?;
    let scheduler = scheduler.start().await?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    scheduler.trigger("on-demand").await?;
    println!("triggered on-demand; running for 8 s (Ctrl-C stops sooner)");
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(7)) => {}
        _ = tokio::signal::ctrl_c() => println!("Ctrl-C: stopping"),
    }
    scheduler.stop_with_grace(Duration::from_secs(2)).await?;
    for flow in scheduler.list().await {
        println!(
            "{:<10} {:?}: {} runs, failure streak {}, last error {:?}",
            flow.id, flow.status, flow.run_count, flow.failure_streak, flow.last_error
        );
    }
    Ok(())
}
