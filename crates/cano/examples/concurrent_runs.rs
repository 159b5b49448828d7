//! Many runs at once: 50 nightly reports, at most 8 built at a time, and the batch is
//! done as soon as 20 have been built or 5 seconds have passed, whichever comes first.
//! The reports still being built then are cancelled, the rest never start; progress is
//! printed while the batch runs, and what happened to each report at the end.
//!
//! Run it with `cargo run --example concurrent_runs`.

use std::time::Duration;

use cano::many::{Outcome, WaitStrategy};
use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Report {
    Build(u32),
    Published(u32),
}

/// Builds report `n`: it takes 100 to 900 ms, and one in seven fails (its data source
/// is down).
struct Build(u32);
#[task]
impl Task<Report> for Build {
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
    async fn run_bare(&self) -> Result<TaskResult<Report>, CanoError> {
        let n = self.0;
        tokio::time::sleep(Duration::from_millis(100 + u64::from(n * 37 % 9) * 100)).await;
        if n % 7 == 3 {
            return Err(CanoError::task_execution(format!(
                "the source of report {n} is down"
            )));
        }
        Ok(TaskResult::Single(Report::Published(n)))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let mut workflow = Workflow::bare();
    for n in 0..50 {
        workflow = workflow
            .register(Report::Build(n), Build(n))
            .add_exit_state(Report::Published(n));
    }
    let strategy = WaitStrategy::WaitQuotaOrDuration {
        quota: 20,
        duration: Duration::from_secs(5),
    };
    let batch = workflow.spawn_many((0..50).map(Report::Build), 8, strategy)?;
    println!("50 reports, 8 at a time, until 20 are built or 5 s have passed");
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let batch = {
        let mut batch = std::pin::pin!(batch);
        loop {
            tokio::select! {
                result = &mut batch => break result,
                _ = ticks.tick() => {
                    let p = batch.progress();
                    println!(
                        "  started {:>2}, running {}, built {:>2}, failed or stopped {}",
                        p.started, p.running, p.finished, p.stopped
                    );
                }
            }
        }
    };
    println!();
    for run in &batch.runs {
        let what = match &run.outcome {
            Outcome::Finished(state) => format!("{state:?}"),
            Outcome::Failed(e) => format!("failed: {}", e.message()),
            Outcome::Cancelled => "cancelled (the batch was done)".to_owned(),
            Outcome::NotStarted => "not started".to_owned(),
        };
        println!("report {:>2}: {what}", run.index);
    }
    let counts = batch.counts();
    println!(
        "\n{} built, {} failed, {} cancelled, {} not started",
        counts.finished, counts.failed, counts.cancelled, counts.not_started
    );
    // The quota came first. (Reports that ended in the same millisecond as the 20th
    // keep their outcome, so one or two more than 20 may have been built.)
    assert!(counts.finished >= 20, "the quota came first");
    assert_eq!(
        counts.finished + counts.failed + counts.cancelled + counts.not_started,
        50
    );
    Ok(())
}
