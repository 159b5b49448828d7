//! A timer task: a trial account gets a reminder 2 s after sign-up (think: 14 days).
//! The deadline is saved in a sled checkpoint store the moment it is set, so when the
//! process stops half way and the run is resumed, it waits only for the time that is
//! left, not for another 2 s.
//!
//! Run it with `cargo run --example timer_task`.

use std::time::{Duration, Instant};

use cano::prelude::*;
use cano::{CancellationToken, Deadline, RunId, RunOptions};

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
enum Trial {
    WaitForReminder,
    Reminded,
}

struct Reminder;

#[task::timer(state = Trial)]
impl Reminder {
    async fn deadline(&self, _res: &Resources) -> Result<Deadline, CanoError> {
        println!("  deadline set: 2 s from now");
        Ok(Deadline::After(Duration::from_secs(2)))
    }

    async fn fire(&self, _res: &Resources) -> Result<TaskResult<Trial>, CanoError> {
        println!("  reminder sent");
        Ok(TaskResult::Single(Trial::Reminded))
    }
}

fn trial(dir: &std::path::Path) -> Result<Workflow<Trial>, CanoError> {
    Ok(Workflow::bare()
        .register(Trial::WaitForReminder, Reminder)
        .add_exit_state(Trial::Reminded)
        .with_checkpoint_store(SledCheckpointStore::open(dir)?)
        .with_workflow_id("trial"))
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let dir = tempfile::tempdir().map_err(|e| CanoError::store(e.to_string()))?;
    let run = RunId::new();

    println!("First process: starts the timer, stops after 1.2 s");
    let token = CancellationToken::new();
    let first = trial(dir.path())?;
    let running = first.orchestrate_with(
        Trial::WaitForReminder,
        RunOptions::new()
            .with_run_id(run)
            .with_cancellation(token.clone()),
    );
    let stop = async {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        token.cancel();
    };
    let (stopped, ()) = tokio::join!(running, stop);
    println!("  stopped: {}", stopped.unwrap_err());
    drop(first);

    println!("Second process: resumes the run");
    let started = Instant::now();
    let end = trial(dir.path())?.resume_from(run).await?;
    println!(
        "-> {end:?} after waiting {} ms more (the remaining ~800 ms, not 2 s)",
        started.elapsed().as_millis()
    );
    Ok(())
}
