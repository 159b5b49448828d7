//! The smallest useful workflow: three states in a line, no resources.
//!
//! Run it with `cargo run --example workflow_simple`.

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Job {
    Fetch,
    Transform,
    Done,
}

struct Fetch;
#[task(state = Job)]
impl Fetch {
    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        println!("fetching");
        Ok(TaskResult::Single(Job::Transform))
    }
}

struct Transform;
#[task(state = Job)]
impl Transform {
    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        println!("transforming");
        Ok(TaskResult::Single(Job::Done))
    }
}

#[tokio::main]
async fn main() -> Result<(), CanoError> {
    let workflow = Workflow::bare()
        .register(Job::Fetch, Fetch)
        .register(Job::Transform, Transform)
        .add_exit_state(Job::Done);
    let end = workflow.orchestrate(Job::Fetch).await?;
    println!("finished in {end:?}");
    Ok(())
}
