//! A poll task: a report export runs elsewhere; the workflow asks for its status every
//! 200 ms until it is ready, rides out a couple of 503s from the status endpoint, and
//! gives up after 5 s if the export never finishes.
//!
//! Run it with `cargo run --example poll_task`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Report {
    AwaitExport,
    Download,
    Done,
}

/// The export service: done after `ready_after` status checks; checks 2 and 3 fail.
struct ExportService {
    checks: AtomicU32,
    ready_after: u32,
}

struct AwaitExport {
    service: Arc<ExportService>,
    max_wait: Duration,
}

#[task::poll(state = Report)]
impl AwaitExport {
    async fn poll(&self, _res: &Resources) -> Result<PollOutcome<Report>, CanoError> {
        let check = self.service.checks.fetch_add(1, Ordering::SeqCst) + 1;
        if check == 2 || check == 3 {
            println!("  check {check}: status endpoint answered 503");
            return Err(CanoError::task_execution("status endpoint answered 503"));
        }
        if check >= self.service.ready_after {
            println!("  check {check}: export ready");
            return Ok(PollOutcome::ready(Report::Download));
        }
        println!("  check {check}: still running");
        Ok(PollOutcome::pending(Duration::from_millis(200)))
    }

    fn on_error(&self) -> PollErrorPolicy {
        PollErrorPolicy::Retry {
            max_errors: 3,
            delay: Duration::from_millis(500),
        }
    }

    fn max_wait(&self) -> Option<Duration> {
        Some(self.max_wait)
    }
}

struct Download;

#[task(state = Report)]
impl Download {
    async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
        Ok(TaskResult::Single(Report::Done))
    }
}

async fn export(ready_after: u32, max_wait: Duration) -> Result<Report, CanoError> {
    let service = Arc::new(ExportService {
        checks: AtomicU32::new(0),
        ready_after,
    });
    Workflow::bare()
        .register(Report::AwaitExport, AwaitExport { service, max_wait })
        .register(Report::Download, Download)
        .add_exit_state(Report::Done)
        .orchestrate(Report::AwaitExport)
        .await
}

#[tokio::main]
async fn main() {
    println!("An export that finishes after 6 checks:");
    let started = Instant::now();
    let end = export(6, Duration::from_secs(5)).await;
    println!("-> {end:?} after {} ms\n", started.elapsed().as_millis());

    println!("An export that never finishes, with a 1.5 s maximum wait:");
    let started = Instant::now();
    let err = export(u32::MAX, Duration::from_millis(1_500))
        .await
        .unwrap_err();
    println!(
        "-> failed after {} ms: {err}",
        started.elapsed().as_millis()
    );
}
