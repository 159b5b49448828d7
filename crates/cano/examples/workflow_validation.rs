//! What `validate()` and `validate_initial_state()` accept and what they report.
//!
//! Run it with `cargo run --example workflow_validation`.

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Start,
    Process,
    Complete,
}

struct Begin;
#[task(state = Step)]
impl Begin {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step::Process))
    }
}

struct Work;
#[task(state = Step)]
impl Work {
    async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
        Ok(TaskResult::Single(Step::Complete))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let sound = Workflow::bare()
        .register(Step::Start, Begin)
        .register(Step::Process, Work)
        .add_exit_state(Step::Complete);
    sound.validate()?;
    sound.validate_initial_state(&Step::Start)?;
    println!(
        "sound workflow: valid, ends in {:?}",
        sound.orchestrate(Step::Start).await?
    );

    let no_exit = Workflow::bare()
        .register(Step::Start, Begin)
        .register(Step::Process, Work);
    println!("no exit state:      {}", no_exit.validate().unwrap_err());

    let twice = Workflow::bare()
        .register(Step::Start, Begin)
        .register(Step::Start, Work)
        .add_exit_state(Step::Complete);
    println!("registered twice:   {}", twice.validate().unwrap_err());

    let partial = Workflow::bare()
        .register(Step::Start, Begin)
        .add_exit_state(Step::Complete);
    println!(
        "bad initial state:  {}",
        partial.validate_initial_state(&Step::Process).unwrap_err()
    );
    println!(
        "missing transition: {}",
        partial.orchestrate(Step::Start).await.unwrap_err()
    );
    Ok(())
}
